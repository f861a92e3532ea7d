// What the sm90 forward epilogues (fp16 / bf16 and FP8) share once O is normalised and in its 16-bit output type:
// store_o_and_lse (O, then the LSE rows) and finish_o_stores (end of the CTA).
//
// O goes out through a TMA store where it can (OStagingSm90): the consumer warpgroup's 64 x dv slice goes to a
// shared-memory slot with stmatrix and from there to global memory with one TMA store, which runs while the
// warpgroup starts its next tile (FA3 paper); the slot is waited for at the warpgroup's next store and at the end of
// the CTA. The slot (OStagingSlot) is either the warpgroup's own, next to the mainloop's buffers (Traits::kTmaStoreO,
// where shared memory has room), or a V stage the tile has finished with (Traits::kOStagingInV: hdim 192 / 256, see
// the mainloop's o_staging_slot). A TMA store also needs rows inside their sequence (a varlen tile past its
// sequence's end would write the next sequence's rows; seqused rows must stay untouched) and an output whose base and
// strides are 16-byte multiples (TMA's rule). Otherwise each thread stores its column pairs from registers
// (store_o_rows).
#pragma once

#include <cuda_runtime_api.h>

#include <cute/arch/copy_sm90.hpp>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/tensor.hpp>
#include <cutlass/gemm/collective/builders/sm90_common.inl>

#include "kernels/common/fwd_params.hpp"
#include "kernels/common/layout_utils.hpp"
#include "kernels/common/named_barriers.hpp"
#include "kernels/common/seqlen_info.hpp"
#include "kernels/common/tile_scheduler.hpp"

namespace flash3 {

// The LSE of the rows a consumer thread holds (rows row0 + the tile-relative rows in tOcO_rc), written by one thread
// of each quad (the four that share a row); rows past the sequence are skipped. Both forward epilogues use it.
template <int kRows, class TensorC>
CUTLASS_DEVICE void store_lse_rows(FwdParams const& p, TileCoord tile, SeqlenInfo const& seq, int row0,
                                   TensorC const& tOcO_rc, float const (&lse)[kRows]) {
  if (p.lse == nullptr || (threadIdx.x % 4) != 0) { return; }
  CUTE_UNROLL
  for (int r = 0; r < kRows; ++r) {
    int const row = row0 + int(cute::get<0>(tOcO_rc(r, 0)));
    if (row < seq.seqlen_q) {
      p.lse[tile.batch * p.lse_batch_stride + tile.head * p.lse_head_stride + seq.offset_q + row] = lse[r];
    }
  }
}

// O from registers, for rows the TMA store cannot take: each thread stores its adjacent column pairs (mode 0 of the
// accumulator's column index has size 2) as 32-bit words; rows past the sequence and columns past head_dim_v are
// skipped. rO_rc: the thread's O in the output type, (row, col) view; tOcO_rc: the matching tile coordinates.
template <int kRows, class TensorR, class TensorC>
CUTLASS_DEVICE void store_o_rows(FwdParams const& p, TileCoord tile, SeqlenInfo const& seq, int row0,
                                 TensorR const& rO_rc, TensorC const& tOcO_rc) {
  using Element = typename TensorR::value_type;
  Element* o_head = static_cast<Element*>(p.out) + tile.batch * p.o_batch_stride + tile.head * p.o_head_stride;
  CUTE_UNROLL
  for (int r = 0; r < kRows; ++r) {
    int const row = row0 + int(cute::get<0>(tOcO_rc(r, 0)));
    if (row >= seq.seqlen_q) { continue; }
    Element* o_row = o_head + (seq.offset_q + row) * p.o_row_stride;
    CUTE_UNROLL
    for (int c = 0; c < cute::size<1>(rO_rc); c += 2) {
      int const col = int(cute::get<1>(tOcO_rc(r, c)));
      if (col < p.head_dim_v) {
        cutlass::Array<Element, 2> pair;
        pair[0] = rO_rc(r, c);
        pair[1] = rO_rc(r, c + 1);
        *reinterpret_cast<cutlass::Array<Element, 2>*>(o_row + col) = pair;
      }
    }
  }
}

// Where a consumer warpgroup stages its O for the TMA store. `released`: when the slot lies in a V stage, that stage's
// empty barrier and the phase that completes once every consumer warpgroup has released the tile's last use of the
// stage (the other warpgroup's P V may still read it). A null slot: the rows go out from registers.
struct OStagingSlot {
  void* slot = nullptr;
  uint64_t* released = nullptr;
  uint32_t released_phase = 0;
};

// Storage16: a 16-bit type the TMA descriptor is built for (the store copies bits, so fp16 and bf16 outputs share it).
template <class Storage16, int kHeadDimV_>
struct OStagingSm90 {
  static_assert(sizeof(Storage16) == 2, "the staged output is 16-bit");
  using HeadDimV = cute::Int<kHeadDimV_>;
  using SmemLayout = decltype(cute::tile_to_shape(
      cutlass::gemm::collective::detail::ss_smem_selector<cute::GMMA::Major::K, Storage16, cute::_64, HeadDimV>(),
      cute::Shape<cute::_64, HeadDimV>{}));
  static constexpr int kSlotElements = cute::cosize_v<SmemLayout>;
  static constexpr int kSlotBytes = kSlotElements * 2;
  using ShapeO = cute::Shape<int32_t, int32_t, int32_t, int32_t>;  // (rows, dv, heads, batch)
  using StrideO = cute::Stride<int64_t, cute::_1, int64_t, int64_t>;
  using Tma = decltype(cute::make_tma_copy(
      cute::SM90_TMA_STORE{},
      cute::make_tensor(cute::make_gmem_ptr(static_cast<Storage16*>(nullptr)), ShapeO{}, StrideO{}), SmemLayout{},
      cute::Shape<cute::_64, HeadDimV>{}, cute::_1{}));
  // One warpgroup's slice of the consumers' P V MMA: a 64 x dv accumulator in the GMMA C layout, which is the same for
  // every input type (so the FP8 kernels' fragments fit it too).
  using MmaWarpgroup = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<cute::bfloat16_t, cute::bfloat16_t, float, cute::Shape<cute::_64, HeadDimV, cute::_16>,
                                 cute::GMMA::Major::K, cute::GMMA::Major::MN>()));

  struct Params {
    ShapeO shape;
    Tma tma;
    bool enabled;  // false: base or strides are not 16-byte multiples (the callers store from registers)
  };

  // Host: the output of `p` as a TMA store target; rows_q / batch as the launcher's loads see them (varlen: total
  // rows, batch 1).
  static Params make_params(FwdParams const& p, int32_t rows_q, int32_t batch) {
    using namespace cute;
    Params op{};
    bool const varlen = p.cu_seqlens_q != nullptr;
    auto aligned = [](int64_t elements) { return (elements * 2) % 16 == 0; };
    op.enabled = reinterpret_cast<uintptr_t>(p.out) % 16 == 0 && aligned(p.o_row_stride) &&
                 aligned(p.o_head_stride) && (varlen || aligned(p.o_batch_stride));
    if (op.enabled) {
      op.shape = make_shape(rows_q, p.head_dim_v, p.num_heads, batch);
      Tensor mO = make_tensor(make_gmem_ptr(static_cast<Storage16*>(p.out)), op.shape,
                              make_stride(p.o_row_stride, _1{}, p.o_head_stride, varlen ? int64_t(0) : p.o_batch_stride));
      op.tma = make_tma_copy(SM90_TMA_STORE{}, mO, SmemLayout{}, Shape<_64, HeadDimV>{}, _1{});
    }
    return op;
  }

  // The forward epilogues' entry, called by every consumer thread (mma_thread_idx) of a CTA with kBlockM-row tiles;
  // slots: the CTA's kBlockM / 64 slots; varlen: the output is (total rows, h, dv). Stores the thread's warpgroup's
  // rows of `tile` and returns true, or does nothing and returns false when those rows cannot go by TMA (the caller
  // stores from registers).
  template <int kBlockM, class TensorR>
  CUTLASS_DEVICE static bool try_store(Params const& op, OStagingSlot const& slot, int mma_thread_idx, TileCoord tile,
                                       SeqlenInfo const& seq, bool varlen, TensorR const& rO) {
    int const warpgroup = mma_thread_idx / cutlass::NumThreadsPerWarpGroup;
    int const row_block = tile.m_block * (kBlockM / 64) + warpgroup;
    if (slot.slot == nullptr || !op.enabled || (row_block + 1) * 64 > seq.seqlen_q) { return false; }
    store(op, slot, static_cast<FwdNamedBarrier>(int(FwdNamedBarrier::kOStagingWG1) + warpgroup),
          mma_thread_idx % cutlass::NumThreadsPerWarpGroup, rO, tile.head, varlen ? 0 : tile.batch, seq.offset_q, row_block);
    return true;
  }

  // Called by all 128 threads of the warpgroup. rO: the thread's 16-bit O fragment (the tiled MMA's C partition);
  // slot: the warpgroup's kSlotElements of shared memory; staging: the warpgroup's named barrier.
  template <class TensorR>
  CUTLASS_DEVICE static void store(Params const& op, OStagingSlot const& slot, FwdNamedBarrier staging,
                                   int thread_in_wg, TensorR const& rO, int head, int batch_coord, int64_t offset_q,
                                   int row_block) {
    using namespace cute;
    using Element = typename TensorR::value_type;
    static_assert(sizeof(Element) == 2);
    bool const is_leader = thread_in_wg == 0;
    Tensor sO = make_tensor(make_smem_ptr(static_cast<Element*>(slot.slot)), SmemLayout{});  // (64, dv)
    // The previous store has read the slot, and a V stage's readers are done (the leader waits; the barrier tells
    // the others).
    if (is_leader) {
      tma_store_wait<0>();
      if (slot.released != nullptr) { cutlass::arch::ClusterBarrier::wait(slot.released, slot.released_phase); }
    }
    named_barrier_sync(cutlass::NumThreadsPerWarpGroup, staging);
    MmaWarpgroup mma;
    auto copy_o = make_tiled_copy_C(Copy_Atom<SM90_U32x4_STSM_N, Element>{}, mma);
    auto thr_copy = copy_o.get_thread_slice(thread_in_wg);
    Tensor rO_wg = make_tensor(rO.data(), partition_fragment_C(mma, Shape<_64, HeadDimV>{}).layout());
    copy(copy_o, thr_copy.retile_S(rO_wg), thr_copy.partition_D(sO));
    tma_store_fence();  // the generic-proxy writes, visible to the TMA (async proxy)
    named_barrier_sync(cutlass::NumThreadsPerWarpGroup, staging);
    if (is_leader) {
      Tensor sO_bits = make_tensor(make_smem_ptr(static_cast<Storage16*>(slot.slot)), SmemLayout{});
      Tensor mO = op.tma.get_tma_tensor(op.shape)(_, _, head, batch_coord);  // (rows, dv)
      Tensor gO = local_tile(domain_offset(make_coord(offset_q, _0{}), mO), Shape<_64, HeadDimV>{},
                             make_coord(row_block, _0{}));
      auto [tOgO, tOsO] =
          tma_partition(op.tma, _0{}, Layout<_1>{}, group_modes<0, 2>(sO_bits), group_modes<0, 2>(gO));
      copy(op.tma, tOsO, tOgO);
      tma_store_arrive();
    }
  }

  // After the warpgroup's last tile: its last store has read the slot (shared memory must outlive it).
  CUTLASS_DEVICE static void finish(int thread_in_wg) {
    if (thread_in_wg == 0) { cute::tma_store_wait<0>(); }
  }
};

// The warpgroup's own slot next to the mainloop's buffers where the kernel has them (Traits::kTmaStoreO), else none.
template <class Traits>
CUTLASS_DEVICE OStagingSlot own_o_staging_slot(typename Traits::SharedStorage& smem, int mma_thread_idx) {
  if constexpr (Traits::kTmaStoreO) {
    int const warpgroup = mma_thread_idx / cutlass::NumThreadsPerWarpGroup;
    return {smem.o.data() + warpgroup * Traits::OStaging::kSlotElements};
  } else {
    return {};
  }
}

// Both forward epilogues' final step for one tile: O (the thread's fragment, already normalised and converted to the
// 16-bit output type) by TMA through `slot` where the kernel stages O (Traits::kStagedO) and the rows allow it, else
// from registers; then the LSE.
template <class Traits, int kRows, class Params, class TensorR, class TensorC>
CUTLASS_DEVICE void store_o_and_lse(Params const& params, OStagingSlot const& slot, int mma_thread_idx,
                                    TileCoord tile, SeqlenInfo const& seq, TensorR const& rO, TensorC const& tOcO_rc,
                                    float const (&lse)[kRows]) {
  FwdParams const& p = params.fwd;
  int const row0 = tile.m_block * Traits::kBlockM;
  bool by_tma = false;
  if constexpr (Traits::kStagedO) {
    by_tma = Traits::OStaging::template try_store<Traits::kBlockM>(params.o_staging, slot, mma_thread_idx, tile, seq,
                                                                   p.cu_seqlens_q != nullptr, rO);
  }
  if (!by_tma) {
    auto const rO_rc = cute::make_tensor(rO.data(), accumulator_rowcol_layout(rO.layout()));
    store_o_rows<kRows>(p, tile, seq, row0, rO_rc, tOcO_rc);
  }
  store_lse_rows(p, tile, seq, row0, tOcO_rc, lse);
}

// After a consumer warpgroup's last tile: its last TMA store has read its slot (shared memory must outlive it).
template <class Traits>
CUTLASS_DEVICE void finish_o_stores(int mma_thread_idx) {
  if constexpr (Traits::kStagedO) { Traits::OStaging::finish(mma_thread_idx % cutlass::NumThreadsPerWarpGroup); }
}

}  // namespace flash3
