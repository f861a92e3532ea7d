// Compile-time shapes of the sm90 forward: tiles, WGMMA atoms, shared-memory layouts, TMA types, shared storage.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/gemm/collective/builders/sm90_common.inl>

#include "kernels/common/pipeline_tma.hpp"
#include "kernels/common/tile_scheduler.hpp"
#include "kernels/sm90/collective/epilogue_fwd_shared_sm90.hpp"
#include "kernels/sm90/tile_config.hpp"

namespace flash3 {

// kLongSequence_: the kernel's long-sequence tile (tile_config.hpp), where it has one; the same as false elsewhere.
template <class Element_, int kHeadDim_, int kHeadDimV_, bool kHasLocal_, bool kHasSoftcap_,
          bool kLongSequence_ = false>
struct FwdTraitsSm90 {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kHeadDimV = kHeadDimV_;
  static constexpr bool kHasLocal = kHasLocal_;
  static constexpr bool kHasSoftcap = kHasSoftcap_;
  // The fixed-offset softmax and its repair launch (softmax.hpp, FwdSoftmaxMode); FLASH3_FWD_EXP & 65536 compiles
  // them out (at run time FLASH3_FWD_SOFTMAX=exact takes the exact softmax alone: src/dispatch/fwd_dispatch.hpp).
  // Not for hdim 256: there the GEMMs hide the softmax and it measured even at 1k-16k, -3% at 512 (perf-notes
  // forward row 28).
  static constexpr bool kFixedOffsetSoftmax = (FLASH3_FWD_EXP & 65536) == 0 && kHeadDim <= 192;

  static constexpr FwdTileConfig kConfig = fwd_tile_config_sm90(kHeadDim, kHeadDimV, kHasLocal, kLongSequence_);
  static constexpr int kBlockM = kConfig.block_m;
  static constexpr int kBlockN = kConfig.block_n;
  static constexpr int kStages = kConfig.stages;
  static constexpr int kNumMmaWarpgroups = kBlockM / 64;  // each consumer warpgroup owns 64 query rows
  static constexpr int kNumMmaThreads = kNumMmaWarpgroups * cutlass::NumThreadsPerWarpGroup;
  static constexpr int kNumThreads = kNumMmaThreads + cutlass::NumThreadsPerWarpGroup;  // + producer warpgroup
  // Pingpong scheduling of the two consumer warpgroups (see mainloop_fwd_sm90_mma.hpp).
  static constexpr bool kPingpong = kConfig.pingpong && kNumMmaWarpgroups == 2;
  // setmaxnreg budgets (64K registers per SM, one CTA per SM): the producer only issues TMA and keeps the minimum.
  static constexpr int kProducerRegisters = kNumMmaWarpgroups == 2 ? 24 : 32;
  static constexpr int kConsumerRegisters = kNumMmaWarpgroups == 2 ? 240 : 160;

  using BlockM = cute::Int<kBlockM>;
  using BlockN = cute::Int<kBlockN>;
  using HeadDim = cute::Int<kHeadDim>;
  using HeadDimV = cute::Int<kHeadDimV>;
  using StagesT = cute::Int<kStages>;

  // S = Q K^T: both operands from shared memory, K-major. O += P V: P from registers, V^T MN-major in smem.
  using AtomLayoutMma = cute::Layout<cute::Shape<cute::Int<kNumMmaWarpgroups>, cute::_1, cute::_1>>;
  using TiledMmaQK = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float, cute::Shape<cute::_64, BlockN, HeadDim>>(),
      AtomLayoutMma{}));
  using TiledMmaPV = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<Element, Element, float, cute::Shape<cute::_64, HeadDimV, BlockN>,
                                 cute::GMMA::Major::K, cute::GMMA::Major::MN>(),
      AtomLayoutMma{}));

  using SmemLayoutQ = decltype(cute::tile_to_shape(
      cutlass::gemm::collective::detail::ss_smem_selector<cute::GMMA::Major::K, Element, BlockM, HeadDim>(),
      cute::Shape<BlockM, HeadDim>{}));
  using SmemLayoutK = decltype(cute::tile_to_shape(
      cutlass::gemm::collective::detail::ss_smem_selector<cute::GMMA::Major::K, Element, BlockN, HeadDim>(),
      cute::Shape<BlockN, HeadDim, StagesT>{}));
  // V as the B operand of P V is (dv, kBlockN) with dv contiguous (MN-major); tiled K-direction first, as the
  // canonical MN-major GMMA layouts expect.
  using SmemLayoutVt = decltype(cute::tile_to_shape(
      cutlass::gemm::collective::detail::ss_smem_selector<cute::GMMA::Major::MN, Element, HeadDimV, BlockN>(),
      cute::Shape<HeadDimV, BlockN, StagesT>{}, cute::Step<cute::_2, cute::_1, cute::_3>{}));

  // Global tensors as the TMA sees them: (rows, d, heads, batch) with 64-bit strides; varlen uses batch = 1 and
  // offsets rows by cu_seqlens.
  using ShapeQKV = cute::Shape<int32_t, int32_t, int32_t, int32_t>;
  using StrideQKV = cute::Stride<int64_t, cute::_1, int64_t, int64_t>;
  using StrideVt = cute::Stride<cute::_1, int64_t, int64_t, int64_t>;  // V viewed as (d, rows, heads, batch)

  using TmaQ = decltype(cute::make_tma_copy(
      cute::SM90_TMA_LOAD{},
      cute::make_tensor(cute::make_gmem_ptr(static_cast<Element const*>(nullptr)), ShapeQKV{}, StrideQKV{}),
      SmemLayoutQ{}, cute::Shape<BlockM, HeadDim>{}, cute::_1{}));
  using TmaK = decltype(cute::make_tma_copy(
      cute::SM90_TMA_LOAD{},
      cute::make_tensor(cute::make_gmem_ptr(static_cast<Element const*>(nullptr)), ShapeQKV{}, StrideQKV{}),
      cute::take<0, 2>(SmemLayoutK{}), cute::Shape<BlockN, HeadDim>{}, cute::_1{}));
  using TmaV = decltype(cute::make_tma_copy(
      cute::SM90_TMA_LOAD{},
      cute::make_tensor(cute::make_gmem_ptr(static_cast<Element const*>(nullptr)), ShapeQKV{}, StrideVt{}),
      cute::take<0, 2>(SmemLayoutVt{}), cute::Shape<HeadDimV, BlockN>{}, cute::_1{}));

  static constexpr uint32_t kTmaBytesQ = kBlockM * kHeadDim * sizeof(Element);
  static constexpr uint32_t kTmaBytesK = kBlockN * kHeadDim * sizeof(Element);
  static constexpr uint32_t kTmaBytesV = kBlockN * kHeadDimV * sizeof(Element);

  using PipelineKV = TmaPipeline<kStages>;
  // Q is double-buffered for hdim 96-128 (where shared memory has room): the producer loads the next tile's Q while
  // the current tile runs, instead of after the consumers released Q near its end. Measured (perf-notes forward
  // row 18): hdim 128 +2-3% at seqlen 512-1k, neutral at long seqlens; hdim 64 unmasked (3 warpgroups, 160
  // registers) -4% at 16k, so it keeps one. FLASH3_FWD_EXP & 2048 forces one buffer (A/B).
  static constexpr int kQStages =
      ((FLASH3_FWD_EXP & 2048) == 0 && kHeadDim > 64 &&
       2 * kTmaBytesQ + kStages * (kTmaBytesK + kTmaBytesV) + 1024 <= 227 * 1024) ? 2 : 1;
  using PipelineQ = TmaPipeline<kQStages>;

  // The epilogue stages O in shared memory (one 64-row slot per consumer warpgroup) and writes it with a TMA store
  // (collective/epilogue_fwd_shared_sm90.hpp) where shared memory has room for the slots next to the mainloop's
  // buffers (head dims up to 128, and 192 x 128); elsewhere it stores from registers. FLASH3_FWD_EXP & 262144 turns
  // it off (A/B).
  using OStaging = OStagingSm90<Element, kHeadDimV>;
  static constexpr bool kTmaStoreO =
      (FLASH3_FWD_EXP & 262144) == 0 && kQStages * kTmaBytesQ + kStages * (kTmaBytesK + kTmaBytesV) +
                                                kNumMmaWarpgroups * OStaging::kSlotBytes + 2048 <= 227 * 1024;

  // Where the slots do not fit (hdim 192 and 256), O is staged in V's shared memory instead, as FA3 does: each
  // consumer warpgroup writes its slot into one of the two V stages once every warpgroup has released the tile's
  // last use of it (warpgroup 0: the stage of the second-to-last key block, 1: the last), and the producer loads the
  // next tile's V only after both stores have read their slots (the `o_free` barrier; MainloopFwdSm90Mma::
  // o_staging_slot). Tiles with no key block store from registers (the producer may be filling V meanwhile).
  // FLASH3_FWD_EXP & 1048576 turns it off (A/B).
  static constexpr bool kOStagingInV = (FLASH3_FWD_EXP & (262144 | 1048576)) == 0 && !kTmaStoreO && kStages == 2 &&
                                       kNumMmaWarpgroups == 2 && OStaging::kSlotBytes <= kTmaBytesV &&
                                       kTmaBytesV % 1024 == 0;
  static constexpr bool kStagedO = kTmaStoreO || kOStagingInV;
  // Masked kernels: how the dynamic tile walk hands indices to the consumer warpgroups, each on its own (so the two
  // pingpong warpgroups do not meet at tile boundaries): mbarriers for hdim 64, a named-barrier pair per warpgroup
  // elsewhere (kernels/common/tile_scheduler.hpp; measured there).
  static constexpr TileHandOverMode kTileHandOver =
      kHeadDim <= 64 ? TileHandOverMode::kMbarrier : TileHandOverMode::kNamedBarrierPerWarpgroup;
  static constexpr int kVStageElements = kBlockN * kHeadDimV;  // one stage of SmemLayoutVt

  struct SharedStorage {
    // 128-byte swizzled tiles need 1024-byte alignment.
    alignas(1024) cute::array_aligned<Element, kQStages * cute::cosize_v<SmemLayoutQ>> q;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutK>> k;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutVt>> v;
    typename PipelineKV::SharedStorage pipeline_k;
    typename PipelineKV::SharedStorage pipeline_v;
    // O of each consumer warpgroup, for the TMA store (kTmaStoreO; a token 16 bytes otherwise).
    alignas(1024) cute::array_aligned<Element, kTmaStoreO ? kNumMmaWarpgroups * OStaging::kSlotElements : 8> o;
    typename PipelineQ::SharedStorage pipeline_q;  // one stage per Q buffer
    // kOStagingInV: both consumer warpgroups' O stores of the last tile have read V's stages (a phase per tile with
    // key blocks; the producer waits before the next tile's first V load).
    cutlass::arch::ClusterBarrier::ValueType o_free;
    TileHandOver tile_handover;  // dynamic tile walk: indices handed from the producer warp to the consumers
  };
  static constexpr int kSharedStorageBytes = sizeof(SharedStorage);
  // Q buffer `index` (of kQStages): its first element, and the (kBlockM, d) tile.
  CUTLASS_DEVICE static Element* q_buffer(SharedStorage& smem, int index) {
    return smem.q.data() + index * cute::cosize_v<SmemLayoutQ>;
  }
  CUTLASS_DEVICE static auto q_tile(SharedStorage& smem, int index) {
    return cute::make_tensor(cute::make_smem_ptr(q_buffer(smem, index)), SmemLayoutQ{});
  }
  // Q's WGMMA descriptors rebuilt in every trip of the key-block loop (from an opaque pointer) instead of held in
  // registers across it, where the consumers spill otherwise. Measured on the H100 (perf-notes forward row 22):
  // spills 264 -> 44 B (hdim 256 masked), 136 -> 32 B (256 unmasked), 216 -> 44 B (192 masked); +2-8% causal at
  // 1k-16k, +5% hdim 256 full at 16k. hdim 192 unmasked spills 36 B either way and keeps the hoisted descriptors.
  // FLASH3_FWD_EXP & 8192 forces the rebuild on, & 16384 off (A/B).
  static constexpr bool kRebuildQDescriptors =
      (FLASH3_FWD_EXP & 8192) != 0 ||
      ((FLASH3_FWD_EXP & 16384) == 0 && (kHeadDim > 192 || (kHeadDim > 128 && kHasLocal)));
  static_assert(kSharedStorageBytes <= 227 * 1024, "tile config exceeds the 227 KB shared-memory limit");
};

}  // namespace flash3
