// The TMA-store half of the sm90 forward epilogues (fp16 / bf16 and FP8): a consumer warpgroup's 64 x dv slice of O,
// already in its 16-bit output type, goes to a shared-memory slot with stmatrix and from there to global memory with
// one TMA store, which runs while the warpgroup starts its next tile (FA3 paper). The slot is waited for at the
// warpgroup's next store, and at the end of the CTA (finish).
//
// Used where the kernel has room for one slot per consumer warpgroup next to its mainloop buffers, for row blocks that
// lie inside their sequence (a varlen tile past its sequence's end would write the next sequence's rows; seqused rows
// must stay untouched), and for outputs whose base and strides are 16-byte multiples (TMA's rule). The callers store
// from registers otherwise.
#pragma once

#include <cuda_runtime_api.h>

#include <cute/arch/copy_sm90.hpp>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/tensor.hpp>
#include <cutlass/gemm/collective/builders/sm90_common.inl>

#include "kernels/common/fwd_params.hpp"
#include "kernels/common/named_barriers.hpp"
#include "kernels/common/seqlen_info.hpp"
#include "kernels/common/tile_scheduler.hpp"

namespace flash3 {

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
  CUTLASS_DEVICE static bool try_store(Params const& op, Storage16* slots, int mma_thread_idx, TileCoord tile,
                                       SeqlenInfo const& seq, bool varlen, TensorR const& rO) {
    int const warpgroup = mma_thread_idx / cutlass::NumThreadsPerWarpGroup;
    int const row_block = tile.m_block * (kBlockM / 64) + warpgroup;
    if (!op.enabled || (row_block + 1) * 64 > seq.seqlen_q) { return false; }
    store(op, slots + warpgroup * kSlotElements,
          static_cast<FwdNamedBarrier>(int(FwdNamedBarrier::kOStagingWG1) + warpgroup),
          mma_thread_idx % cutlass::NumThreadsPerWarpGroup, rO, tile.head, varlen ? 0 : tile.batch, seq.offset_q, row_block);
    return true;
  }

  // Called by all 128 threads of the warpgroup. rO: the thread's 16-bit O fragment (the tiled MMA's C partition);
  // slot: the warpgroup's kSlotElements of shared memory; staging: the warpgroup's named barrier.
  template <class TensorR>
  CUTLASS_DEVICE static void store(Params const& op, Storage16* slot, FwdNamedBarrier staging, int thread_in_wg,
                                   TensorR const& rO, int head, int batch_coord, int64_t offset_q, int row_block) {
    using namespace cute;
    using Element = typename TensorR::value_type;
    static_assert(sizeof(Element) == 2);
    bool const is_leader = thread_in_wg == 0;
    Tensor sO = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(slot)), SmemLayout{});  // (64, dv)
    // The previous store has read the slot (its leader waits; the barrier tells the others).
    if (is_leader) { tma_store_wait<0>(); }
    named_barrier_sync(cutlass::NumThreadsPerWarpGroup, staging);
    MmaWarpgroup mma;
    auto copy_o = make_tiled_copy_C(Copy_Atom<SM90_U32x4_STSM_N, Element>{}, mma);
    auto thr_copy = copy_o.get_thread_slice(thread_in_wg);
    Tensor rO_wg = make_tensor(rO.data(), partition_fragment_C(mma, Shape<_64, HeadDimV>{}).layout());
    copy(copy_o, thr_copy.retile_S(rO_wg), thr_copy.partition_D(sO));
    tma_store_fence();  // the generic-proxy writes, visible to the TMA (async proxy)
    named_barrier_sync(cutlass::NumThreadsPerWarpGroup, staging);
    if (is_leader) {
      Tensor sO_bits = make_tensor(make_smem_ptr(slot), SmemLayout{});
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

}  // namespace flash3
