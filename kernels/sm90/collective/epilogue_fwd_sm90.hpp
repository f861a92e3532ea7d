// Epilogue of the sm90 forward: O = O_acc / rowsum in the output dtype, and LSE (natural log). Rows past the
// sequence's end and columns past head_dim_v are not written.
//
// O goes out one of two ways. Where the kernel has a staging buffer (Traits::kTmaStoreO) and the warpgroup's 64 rows
// lie inside the sequence, the warpgroup writes them to shared memory and one thread issues a TMA store, which runs
// while the warpgroup starts its next tile (the buffer is waited for at the next epilogue). Otherwise (partial row
// blocks, outputs whose strides TMA cannot take) each thread stores its pairs of columns from registers.
#pragma once

#include <cute/arch/copy_sm90_tma.hpp>
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
    int const warpgroup = mma_thread_idx / cutlass::NumThreadsPerWarpGroup;
    if constexpr (Traits::kTmaStoreO) {
      if (params.o_by_tma && row0 + (warpgroup + 1) * 64 <= seq.seqlen_q) {
        store_o_by_tma(params, smem, mma_thread_idx, tile, seq, rO);
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

  // After the tile loop: the warpgroup's last TMA store has read its staging buffer (shared memory must outlive it).
  CUTLASS_DEVICE static void finish(int mma_thread_idx) {
    if constexpr (Traits::kTmaStoreO) {
      if (mma_thread_idx % cutlass::NumThreadsPerWarpGroup == 0) { cute::tma_store_wait<0>(); }
    }
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

  // The warpgroup's 64 rows (all inside the sequence) through its staging buffer and one TMA store.
  template <class Params, class TensorR>
  CUTLASS_DEVICE static void store_o_by_tma(Params const& params, typename Traits::SharedStorage& smem,
                                            int mma_thread_idx, TileCoord tile, SeqlenInfo const& seq,
                                            TensorR const& rO) {
    using namespace cute;
    int const warpgroup = mma_thread_idx / cutlass::NumThreadsPerWarpGroup;
    bool const is_leader = mma_thread_idx % cutlass::NumThreadsPerWarpGroup == 0;
    auto const staging = static_cast<FwdNamedBarrier>(int(FwdNamedBarrier::kOStagingWG1) + warpgroup);
    Tensor sO = make_tensor(make_smem_ptr(smem.o.data() + warpgroup * cosize_v<typename Traits::SmemLayoutO>),
                            typename Traits::SmemLayoutO{});  // (64, dv)
    // The previous tile's store has read the buffer (its leader waits; the barrier tells the others).
    if (is_leader) { tma_store_wait<0>(); }
    named_barrier_sync(cutlass::NumThreadsPerWarpGroup, staging);
    // stmatrix (8 x 8 tiles of 16-bit values, four per instruction) from the warpgroup's accumulator layout: the
    // warpgroup's slice of the tiled MMA is a one-warpgroup MMA over (64, dv), which has the same register order.
    auto mma_wg = cute::make_tiled_mma(
        cute::GMMA::rs_op_selector<Element, Element, float, cute::Shape<cute::_64, typename Traits::HeadDimV,
                                                                        typename Traits::BlockN>,
                                   cute::GMMA::Major::K, cute::GMMA::Major::MN>());
    auto copy_o = make_tiled_copy_C(Copy_Atom<SM90_U32x4_STSM_N, Element>{}, mma_wg);
    auto thr_copy = copy_o.get_thread_slice(mma_thread_idx % cutlass::NumThreadsPerWarpGroup);
    Tensor rO_wg = make_tensor(rO.data(), partition_fragment_C(mma_wg, Shape<_64, typename Traits::HeadDimV>{}).layout());
    copy(copy_o, thr_copy.retile_S(rO_wg), thr_copy.partition_D(sO));
    tma_store_fence();  // make the generic-proxy writes visible to the TMA (async proxy)
    named_barrier_sync(cutlass::NumThreadsPerWarpGroup, staging);
    if (is_leader) {
      FwdParams const& p = params.fwd;
      int const batch_coord = p.cu_seqlens_q != nullptr ? 0 : tile.batch;
      Tensor mO = params.tma_o.get_tma_tensor(params.shape_o)(_, _, tile.head, batch_coord);  // (rows, dv)
      Tensor gO = local_tile(domain_offset(make_coord(seq.offset_q, _0{}), mO),
                             Shape<_64, typename Traits::HeadDimV>{},
                             make_coord(tile.m_block * (Traits::kBlockM / 64) + warpgroup, _0{}));
      auto [tOgO, tOsO] = tma_partition(params.tma_o, _0{}, Layout<_1>{}, group_modes<0, 2>(sO), group_modes<0, 2>(gO));
      copy(params.tma_o, tOsO, tOgO);
      tma_store_arrive();
    }
  }
};

}  // namespace flash3
