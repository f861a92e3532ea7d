// Warpgroup GEMM helpers shared by the sm90 forward and backward mainloops.
#pragma once

#include <cute/tensor.hpp>

namespace flash3 {

// Issues one warpgroup GEMM C (+)= A B over all k blocks and commits it as one WGMMA group (no wait).
// A from registers (RS) needs its registers fenced too; A from shared memory is a tensor of descriptors.
template <bool kZeroInit, class TiledMma, class TensorA, class TensorB, class TensorC>
CUTLASS_DEVICE void wgmma_gemm(TiledMma& mma, TensorA const& tA, TensorB const& tB, TensorC& tC) {
  using namespace cute;
  constexpr bool kARegisters = !is_same_v<typename TensorA::iterator, GMMA::DescriptorIterator>;
  if constexpr (kARegisters) { warpgroup_fence_operand(const_cast<TensorA&>(tA)); }
  warpgroup_fence_operand(tC);
  warpgroup_arrive();
  mma.accumulate_ = kZeroInit ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
  CUTE_UNROLL
  for (int k = 0; k < size<2>(tA); ++k) {
    cute::gemm(mma, tA(_, _, k), tB(_, _, k), tC);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
  warpgroup_fence_operand(tC);
  if constexpr (kARegisters) { warpgroup_fence_operand(const_cast<TensorA&>(tA)); }
}

// Waits for WGMMA groups, but only after `dependency` has been computed. Why: ptxas hoists a plain wgmma wait above
// independent math that precedes it; in SASS every MUFU.EX2 of the softmax landed after the wait for P V, so the
// softmax never overlapped the P V GEMM (the point of the 2-stage pipeline). A branch on a value the softmax produced
// pins the wait below it; both arms wait the same, so nothing else changes.
template <int N>
CUTLASS_DEVICE void warpgroup_wait_after(float dependency) {
  if (__float_as_uint(dependency) != 0xFFFFFFFFu) {
    cute::warpgroup_wait<N>();
  } else {
    cute::warpgroup_wait<N>();
  }
}

}  // namespace flash3
