// Epilogue of the sm90 forward: O = O_acc / rowsum in the output dtype, and LSE (natural log). Rows past the
// sequence's end and columns past head_dim_v are not written.
//   store:        straight from the accumulator registers (4-byte stores: 8 rows x 16 bytes per warp instruction).
//   store_staged: through shared memory (stmatrix), then 16-byte stores of whole 256-byte rows. At seqlen 512 the
//                 register path's stores serialised on their data registers (ncu: ~17% of the kernel's stall
//                 samples in the epilogue, perf-notes forward row 19).
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

  // O = O_acc / rowsum in the output dtype (in registers, accumulator layout); LSE written from registers.
  template <class TensorO>
  CUTLASS_DEVICE static auto normalize_and_write_lse(FwdParams const& p, int mma_thread_idx, TileCoord tile,
                                                     SeqlenInfo const& seq, TensorO& tOrO,
                                                     OnlineSoftmax<kRowsPerThread>& softmax) {
    using namespace cute;
    float inv_sum[kRowsPerThread], lse[kRowsPerThread];
    softmax.finalize(inv_sum, lse);
    typename Traits::TiledMmaPV mma_pv;
    Tensor tOcO = mma_pv.get_thread_slice(mma_thread_idx).partition_C(make_identity_tensor(TileShapeO{}));
    Tensor tOcO_rc = make_tensor(tOcO.data(), accumulator_rowcol_layout(tOcO.layout()));
    Tensor tOrO_rc = make_tensor(tOrO.data(), accumulator_rowcol_layout(tOrO.layout()));
    int const row0 = tile.m_block * Traits::kBlockM;
    CUTE_UNROLL
    for (int r = 0; r < kRowsPerThread; ++r) {
      CUTE_UNROLL
      for (int c = 0; c < size<1>(tOrO_rc); ++c) { tOrO_rc(r, c) *= inv_sum[r]; }
      int const row = row0 + int(get<0>(tOcO_rc(r, 0)));
      if (p.lse != nullptr && (threadIdx.x % 4) == 0 && row < seq.seqlen_q) {
        p.lse[tile.batch * p.lse_batch_stride + tile.head * p.lse_head_stride + seq.offset_q + row] = lse[r];
      }
    }
    return convert_fragment<Element>(tOrO);
  }

  // O through shared memory at smem_o (a (kBlockM x dv) tile in SmemLayoutQ's layout, see kStagedEpilogue). Each
  // warpgroup stages and stores only its own 64 rows; returns once its shared-memory reads are done.
  template <class TensorO>
  CUTLASS_DEVICE static void store_staged(FwdParams const& p, int mma_thread_idx, TileCoord tile,
                                          SeqlenInfo const& seq, TensorO& tOrO,
                                          OnlineSoftmax<kRowsPerThread>& softmax, Element* smem_o) {
    using namespace cute;
    static_assert(Traits::kHeadDimV == Traits::kHeadDim);
    Tensor rO = normalize_and_write_lse(p, mma_thread_idx, tile, seq, tOrO, softmax);
    Tensor sO = make_tensor(make_smem_ptr(smem_o), typename Traits::SmemLayoutQ{});  // (kBlockM, dv)
    typename Traits::TiledMmaPV mma_pv;
    auto r2s = make_tiled_copy_C(Copy_Atom<SM90_U32x4_STSM_N, Element>{}, mma_pv);
    auto thr_r2s = r2s.get_thread_slice(mma_thread_idx);
    copy(r2s, thr_r2s.retile_S(rO), thr_r2s.partition_D(sO));
    int const warpgroup = mma_thread_idx / cutlass::NumThreadsPerWarpGroup;
    auto const barrier = static_cast<FwdNamedBarrier>(int(FwdNamedBarrier::kEpilogueWG1) + warpgroup);
    named_barrier_sync(cutlass::NumThreadsPerWarpGroup, barrier);  // the warpgroup's rows are in shared memory

    // 16-byte chunks: consecutive threads take consecutive chunks of a row, so a warp writes whole rows.
    constexpr int kChunksPerRow = Traits::kHeadDimV / 8;
    constexpr int kRowsPerWarpgroup = 64;
    constexpr int kChunks = kRowsPerWarpgroup * kChunksPerRow;
    static_assert(kChunks % cutlass::NumThreadsPerWarpGroup == 0);
    int const t = mma_thread_idx % cutlass::NumThreadsPerWarpGroup;
    int const wg_row0 = warpgroup * kRowsPerWarpgroup;
    int const rows_left = seq.seqlen_q - (tile.m_block * Traits::kBlockM + wg_row0);  // rows of this WG in range
    Element* o_rows = static_cast<Element*>(p.out) + tile.batch * p.o_batch_stride + tile.head * p.o_head_stride +
                      (seq.offset_q + int64_t(tile.m_block) * Traits::kBlockM + wg_row0) * p.o_row_stride;
    CUTE_UNROLL
    for (int i = 0; i < kChunks / cutlass::NumThreadsPerWarpGroup; ++i) {
      int const chunk = i * cutlass::NumThreadsPerWarpGroup + t;
      int const row = chunk / kChunksPerRow;
      int const col = (chunk % kChunksPerRow) * 8;
      uint4 const v = *reinterpret_cast<uint4 const*>(&sO(wg_row0 + row, col));
      if (row < rows_left && col < p.head_dim_v) { *reinterpret_cast<uint4*>(o_rows + row * p.o_row_stride + col) = v; }
    }
    // Every thread's reads are done before the caller hands the buffer back to the producer (TMA, async proxy).
    cutlass::arch::fence_view_async_shared();
    named_barrier_sync(cutlass::NumThreadsPerWarpGroup, barrier);
  }

  template <class TensorO>
  CUTLASS_DEVICE static void store(FwdParams const& p, int mma_thread_idx, TileCoord tile, SeqlenInfo const& seq,
                                   TensorO& tOrO, OnlineSoftmax<kRowsPerThread>& softmax) {
    using namespace cute;
    Tensor rO = normalize_and_write_lse(p, mma_thread_idx, tile, seq, tOrO, softmax);
    Tensor rO_rc = make_tensor(rO.data(), accumulator_rowcol_layout(rO.layout()));
    typename Traits::TiledMmaPV mma_pv;
    Tensor tOcO = mma_pv.get_thread_slice(mma_thread_idx).partition_C(make_identity_tensor(TileShapeO{}));
    Tensor tOcO_rc = make_tensor(tOcO.data(), accumulator_rowcol_layout(tOcO.layout()));

    int const row0 = tile.m_block * Traits::kBlockM;
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
  }
};

}  // namespace flash3
