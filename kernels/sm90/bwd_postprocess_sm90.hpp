// Postprocess of the sm90 backward: dQ = accumulator * softmax_scale in the input dtype, for every allocated row
// (0 where the row took no part). One CTA of kNumMmaThreads threads per (query block, head, batch); thread t reads the
// values consumer thread t left in the accumulator (fragment order per dQ column chunk, see
// bwd_kernel_traits_sm90.hpp) with coalesced 16-byte loads and finds their (row, col) through the same MMA partition.
#pragma once

#include <cute/tensor.hpp>

#include "kernels/common/bwd_params.hpp"
#include "kernels/common/bwd_prepost.cuh"
#include "kernels/common/layout_utils.hpp"
#include "kernels/sm90/bwd_kernel_traits_sm90.hpp"

namespace flash3 {

template <class Traits>
__global__ void __launch_bounds__(Traits::kNumMmaThreads) bwd_postprocess_sm90(BwdParams const p) {
  using namespace cute;
  using Element = typename Traits::Element;
  int const m_block = blockIdx.x, head = blockIdx.y, batch = blockIdx.z;
  int const allocated = bwd_allocated_q(p, batch);
  int const row0 = m_block * Traits::kBlockM;
  if (row0 >= allocated) { return; }
  typename Traits::TiledMmadQ mma;
  auto thr = mma.get_thread_slice(threadIdx.x);
  Tensor coord = thr.partition_C(make_identity_tensor(Shape<typename Traits::BlockM, typename Traits::DqChunk>{}));
  static_assert(decltype(size(coord))::value == Traits::kDqValuesPerThread);
  constexpr int kVec = Traits::kDqValuesPerThread / 4;

  float4 const* src = reinterpret_cast<float4 const*>(
      p.dq_accum + (bwd_scratch_row(p, batch, head) + row0) * int64_t(Traits::kHeadDim));
  bool const varlen = p.cu_seqlens_q != nullptr;
  int64_t const offset_q = varlen ? p.cu_seqlens_q[batch] : 0;
  Element* dq = static_cast<Element*>(p.dq) + (varlen ? 0 : batch * p.dq_batch_stride) + head * p.dq_head_stride;
  CUTE_UNROLL
  for (int chunk = 0; chunk < Traits::kDqChunks; ++chunk) {
    float values[Traits::kDqValuesPerThread];
    CUTE_UNROLL
    for (int i = 0; i < kVec; ++i) {
      float4 const v = src[(chunk * kVec + i) * Traits::kNumMmaThreads + threadIdx.x];
      values[4 * i] = v.x;
      values[4 * i + 1] = v.y;
      values[4 * i + 2] = v.z;
      values[4 * i + 3] = v.w;
    }
    // Values 2i and 2i + 1 are adjacent columns of one row (the accumulator layout's innermost mode): one 32-bit
    // store.
    CUTE_UNROLL
    for (int i = 0; i < Traits::kDqValuesPerThread; i += 2) {
      int const row = row0 + int(get<0>(coord(i)));
      int const col = chunk * Traits::DqChunk::value + int(get<1>(coord(i)));
      if (row < allocated && col < p.head_dim) {
        cutlass::Array<Element, 2> pair;
        pair[0] = Element(values[i] * p.softmax_scale);
        pair[1] = Element(values[i + 1] * p.softmax_scale);
        *reinterpret_cast<cutlass::Array<Element, 2>*>(dq + (offset_q + row) * p.dq_row_stride + col) = pair;
      }
    }
  }
}

}  // namespace flash3
