// Epilogue of the sm90 forward: O = O_acc / rowsum in the output dtype, and LSE (natural log). Rows past the
// sequence's end and columns past head_dim_v are not written.
//
// O goes out one of two ways: through a shared-memory slot and a TMA store (epilogue_fwd_shared_sm90.hpp) where the
// mainloop hands over a slot (own or in a V stage: MainloopFwdSm90Mma::o_staging_slot) and the warpgroup's rows allow
// it; otherwise each thread stores its pairs of columns from registers.
#pragma once

#include <cute/tensor.hpp>

#include "kernels/common/layout_utils.hpp"
#include "kernels/common/named_barriers.hpp"
#include "kernels/common/seqlen_info.hpp"
#include "kernels/common/softmax.hpp"
#include "kernels/common/tile_scheduler.hpp"
#include "kernels/sm90/fwd_kernel_traits_sm90.hpp"

namespace flash3 {

template <class Traits>
struct EpilogueFwdSm90 {
  using Element = typename Traits::Element;
  using TileShapeO = cute::Shape<typename Traits::BlockM, typename Traits::HeadDimV>;
  static constexpr int kRowsPerThread = 2;

  template <class Params, class TensorO, class Softmax>
  CUTLASS_DEVICE static void store(Params const& params, OStagingSlot const& slot, int mma_thread_idx,
                                   TileCoord tile, SeqlenInfo const& seq, TensorO& tOrO, Softmax& softmax) {
    using namespace cute;
    FwdParams const& p = params.fwd;
    float inv_sum[kRowsPerThread], lse[kRowsPerThread];
    bool const overflow = softmax.finalize(inv_sum, lse);
    // Fixed offsets: a row whose sum overflowed asks for the repair pass (which rewrites the whole output); the rows
    // written here are then garbage for a moment, never the call's result.
    if (p.softmax_mode == int32_t(FwdSoftmaxMode::kFixedOffset) &&
        __any_sync(0xffffffffu, overflow) && cute::elect_one_sync()) {
      p.repair->needed = 1u;
    }

    typename Traits::TiledMmaPV mma_pv;
    auto thr_pv = mma_pv.get_thread_slice(mma_thread_idx);
    Tensor tOcO = thr_pv.partition_C(make_identity_tensor(TileShapeO{}));
    Tensor tOcO_rc = make_tensor(tOcO.data(), accumulator_rowcol_layout(tOcO.layout()));
    Tensor tOrO_rc = make_tensor(tOrO.data(), accumulator_rowcol_layout(tOrO.layout()));
    CUTE_UNROLL
    for (int r = 0; r < kRowsPerThread; ++r) {
      CUTE_UNROLL
      for (int c = 0; c < size<1>(tOrO_rc); ++c) { tOrO_rc(r, c) *= inv_sum[r]; }
    }
    Tensor rO = convert_fragment<Element>(tOrO);
    store_o_and_lse<Traits, kRowsPerThread>(params, slot, mma_thread_idx, tile, seq, rO, tOcO_rc, lse);
  }
};

}  // namespace flash3
