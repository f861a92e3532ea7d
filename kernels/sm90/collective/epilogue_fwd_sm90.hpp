// Epilogue of the sm90 forward: O = O_acc / rowsum in the output dtype, and LSE (natural log). Rows past the
// sequence's end and columns past head_dim_v are not written.
//
// O goes out one of two ways: through a shared-memory slot and a TMA store (epilogue_o_staging_sm90.hpp) where the
// kernel has the slots (Traits::kTmaStoreO) and the warpgroup's rows allow it; otherwise each thread stores its pairs
// of columns from registers.
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
  CUTLASS_DEVICE static void store(Params const& params, typename Traits::SharedStorage& smem, int mma_thread_idx,
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
    Tensor rO_rc = make_tensor(rO.data(), accumulator_rowcol_layout(rO.layout()));

    int const row0 = tile.m_block * Traits::kBlockM;
    if constexpr (Traits::kTmaStoreO) {
      if (Traits::OStaging::template try_store<Traits::kBlockM>(params.o_staging, smem.o.data(), mma_thread_idx, tile,
                                                                seq, p.cu_seqlens_q != nullptr, rO)) {
        store_lse(p, tile, seq, row0, tOcO_rc, lse);
        return;
      }
    }
    Element* o_head = static_cast<Element*>(p.out) + tile.batch * p.o_batch_stride + tile.head * p.o_head_stride;
    CUTE_UNROLL
    for (int r = 0; r < kRowsPerThread; ++r) {
      int const row = row0 + int(get<0>(tOcO_rc(r, 0)));
      if (row >= seq.seqlen_q) { continue; }
      Element* o_row = o_head + (seq.offset_q + row) * p.o_row_stride;
      // Columns come in adjacent pairs (mode 0 of the column index has size 2): store them as one 32-bit word.
      CUTE_UNROLL
      for (int c = 0; c < size<1>(rO_rc); c += 2) {
        int const col = int(get<1>(tOcO_rc(r, c)));
        if (col < p.head_dim_v) {
          cutlass::Array<Element, 2> pair;
          pair[0] = rO_rc(r, c);
          pair[1] = rO_rc(r, c + 1);
          *reinterpret_cast<cutlass::Array<Element, 2>*>(o_row + col) = pair;
        }
      }
    }
    store_lse(p, tile, seq, row0, tOcO_rc, lse);
  }

  // After the tile loop: the warpgroup's last TMA store has read its staging slot.
  CUTLASS_DEVICE static void finish(int mma_thread_idx) {
    if constexpr (Traits::kTmaStoreO) { Traits::OStaging::finish(mma_thread_idx % cutlass::NumThreadsPerWarpGroup); }
  }

 private:
  // One thread of each quad (the four that share a row) writes the row's LSE.
  template <class TensorC>
  CUTLASS_DEVICE static void store_lse(FwdParams const& p, TileCoord tile, SeqlenInfo const& seq, int row0,
                                       TensorC const& tOcO_rc, float const (&lse)[kRowsPerThread]) {
    if (p.lse == nullptr || (threadIdx.x % 4) != 0) { return; }
    CUTE_UNROLL
    for (int r = 0; r < kRowsPerThread; ++r) {
      int const row = row0 + int(cute::get<0>(tOcO_rc(r, 0)));
      if (row < seq.seqlen_q) {
        p.lse[tile.batch * p.lse_batch_stride + tile.head * p.lse_head_stride + seq.offset_q + row] = lse[r];
      }
    }
  }
};

}  // namespace flash3
