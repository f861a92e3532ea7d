// Epilogue of the sm90 FP8 forward: O = O_acc * v_descale(last block) / rowsum in bf16 or fp16 (chosen at run time:
// the epilogue runs once per tile, so one branch here costs nothing, and it halves the kernel count), and the LSE.
// O goes through a shared-memory slot and a TMA store where it can (epilogue_fwd_shared_sm90.hpp), else from registers.
#pragma once

#include <cute/tensor.hpp>

#include "kernels/common/layout_utils.hpp"
#include "kernels/common/named_barriers.hpp"
#include "kernels/common/seqlen_info.hpp"
#include "kernels/common/tile_scheduler.hpp"
#include "kernels/sm90/collective/epilogue_fwd_shared_sm90.hpp"
#include "kernels/sm90/collective/mainloop_fwd_sm90_fp8_mma.hpp"

namespace flash3 {

template <class Traits>
struct EpilogueFwdSm90Fp8 {
  using TileShapeO = cute::Shape<typename Traits::BlockM, typename Traits::HeadDimV>;
  static constexpr int kRowsPerThread = 2;

  template <class Params, class TensorO>
  CUTLASS_DEVICE static void store(Params const& params, typename Traits::SharedStorage& smem, int mma_thread_idx,
                                   TileCoord tile, SeqlenInfo const& seq, TensorO& tOrO,
                                   Fp8OnlineSoftmax<kRowsPerThread>& softmax, float v_scale) {
    using namespace cute;
    float inv_sum[kRowsPerThread], lse[kRowsPerThread];
    softmax.finalize(inv_sum, lse);
    typename Traits::TiledMmaPV mma_pv;
    auto thr_pv = mma_pv.get_thread_slice(mma_thread_idx);
    Tensor tOcO = thr_pv.partition_C(make_identity_tensor(TileShapeO{}));
    Tensor tOcO_rc = make_tensor(tOcO.data(), accumulator_rowcol_layout(tOcO.layout()));
    Tensor tOrO_rc = make_tensor(tOrO.data(), accumulator_rowcol_layout(tOrO.layout()));
    CUTE_UNROLL
    for (int r = 0; r < kRowsPerThread; ++r) {
      float const f = inv_sum[r] * v_scale;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(tOrO_rc); ++c) { tOrO_rc(r, c) *= f; }
    }
    OStagingSlot const slot = own_o_staging_slot<Traits>(smem, mma_thread_idx);
    if (params.fwd.out_is_fp16) {
      store_o_and_lse<Traits, kRowsPerThread>(params, slot, mma_thread_idx, tile, seq,
                                              convert_fragment<cutlass::half_t>(tOrO), tOcO_rc, lse);
    } else {
      store_o_and_lse<Traits, kRowsPerThread>(params, slot, mma_thread_idx, tile, seq,
                                              convert_fragment<cutlass::bfloat16_t>(tOrO), tOcO_rc, lse);
    }
  }
};

}  // namespace flash3
