// Epilogue of the sm90 FP8 forward: O = O_acc * v_descale(last block) / rowsum in bf16 or fp16 (chosen at run time:
// the epilogue runs once per tile, so one branch here costs nothing, and it halves the kernel count), and the LSE.
// O goes through a shared-memory slot and a TMA store where it can (epilogue_o_staging_sm90.hpp), else from registers.
#pragma once

#include <cute/tensor.hpp>

#include "kernels/common/layout_utils.hpp"
#include "kernels/common/named_barriers.hpp"
#include "kernels/common/seqlen_info.hpp"
#include "kernels/common/tile_scheduler.hpp"
#include "kernels/sm90/collective/mainloop_fwd_sm90_fp8_mma.hpp"

namespace flash3 {

template <class Traits>
struct EpilogueFwdSm90Fp8 {
  using TileShapeO = cute::Shape<typename Traits::BlockM, typename Traits::HeadDimV>;
  static constexpr int kRowsPerThread = 2;

  template <class ElementOut, class Params, class TensorO, class TensorC>
  CUTLASS_DEVICE static void write(Params const& params, typename Traits::SharedStorage& smem, int mma_thread_idx,
                                   TileCoord tile, SeqlenInfo const& seq, TensorO const& tOrO, TensorC const& tOcO_rc,
                                   float const (&lse)[kRowsPerThread]) {
    using namespace cute;
    FwdParams const& p = params.fwd;
    Tensor rO = convert_fragment<ElementOut>(tOrO);
    Tensor rO_rc = make_tensor(rO.data(), accumulator_rowcol_layout(rO.layout()));
    int const row0 = tile.m_block * Traits::kBlockM;
    if constexpr (Traits::kTmaStoreO) {
      // Through shared memory and a TMA store (epilogue_o_staging_sm90.hpp) where the warpgroup's rows allow it.
      if (Traits::OStaging::template try_store<Traits::kBlockM>(params.o_staging, smem.o.data(), mma_thread_idx, tile,
                                                                seq, p.cu_seqlens_q != nullptr, rO)) {
        if (p.lse != nullptr && (threadIdx.x % 4) == 0) {
          CUTE_UNROLL
          for (int r = 0; r < kRowsPerThread; ++r) {
            int const row = row0 + int(get<0>(tOcO_rc(r, 0)));
            p.lse[tile.batch * p.lse_batch_stride + tile.head * p.lse_head_stride + seq.offset_q + row] = lse[r];
          }
        }
        return;
      }
    }
    ElementOut* o_head =
        static_cast<ElementOut*>(p.out) + tile.batch * p.o_batch_stride + tile.head * p.o_head_stride;
    CUTE_UNROLL
    for (int r = 0; r < kRowsPerThread; ++r) {
      int const row = row0 + int(get<0>(tOcO_rc(r, 0)));
      if (row >= seq.seqlen_q) { continue; }
      ElementOut* o_row = o_head + (seq.offset_q + row) * p.o_row_stride;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(rO_rc); c += 2) {
        int const col = int(get<1>(tOcO_rc(r, c)));
        if (col < p.head_dim_v) {
          cutlass::Array<ElementOut, 2> pair;
          pair[0] = rO_rc(r, c);
          pair[1] = rO_rc(r, c + 1);
          *reinterpret_cast<cutlass::Array<ElementOut, 2>*>(o_row + col) = pair;
        }
      }
      if (p.lse != nullptr && (threadIdx.x % 4) == 0) {
        p.lse[tile.batch * p.lse_batch_stride + tile.head * p.lse_head_stride + seq.offset_q + row] = lse[r];
      }
    }
  }

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
    if (params.fwd.out_is_fp16) {
      write<cutlass::half_t>(params, smem, mma_thread_idx, tile, seq, tOrO, tOcO_rc, lse);
    } else {
      write<cutlass::bfloat16_t>(params, smem, mma_thread_idx, tile, seq, tOrO, tOcO_rc, lse);
    }
  }
};

}  // namespace flash3
