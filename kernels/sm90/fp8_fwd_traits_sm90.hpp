// Compile-time shapes of the sm90 FP8 (e4m3) forward: tiles, WGMMA atoms, shared-memory layouts, TMA types, shared
// storage.
//
// FP8 WGMMA takes both operands K-major. For S = Q K^T that is the natural layout of Q and K. For O += P V the B
// operand is V with the key index contiguous, i.e. V^T, while V arrives (keys, dv) with dv contiguous. So V is loaded
// by TMA into a staging buffer (sVraw, one pipeline) and transposed inside shared memory by three producer warps
// into sVt (a second pipeline) from which the consumers' P V WGMMAs read. See mainloop_fwd_sm90_fp8_load.hpp.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/gemm/collective/builders/sm90_common.inl>
#include <cutlass/numeric_types.h>

#include "kernels/common/pipeline_tma.hpp"
#include "kernels/common/tile_scheduler.hpp"
#include "kernels/sm90/collective/epilogue_fwd_shared_sm90.hpp"
#include "kernels/sm90/fp8_tile_config.hpp"
#include "kernels/sm90/tile_config.hpp"

namespace flash3 {

// The handshake of the transposed V tiles: "full" completes when every transposer warp arrived (its stores fenced
// for the async proxy), "empty" when every consumer warpgroup released the stage.
template <int kStages>
struct TransposePipeline {
  using Barrier = cutlass::arch::ClusterBarrier;
  struct SharedStorage {
    Barrier::ValueType full[kStages];
    Barrier::ValueType empty[kStages];
  };
  SharedStorage* storage;

  CUTLASS_DEVICE static void init(SharedStorage* s, int num_writer_warps, int num_consumer_warpgroups) {
    for (int i = 0; i < kStages; ++i) {
      Barrier::init(&s->full[i], num_writer_warps);
      Barrier::init(&s->empty[i], num_consumer_warpgroups);
    }
  }
  // Writer: wait until the consumers released the stage (the first pass through the stages does not wait).
  CUTLASS_DEVICE void writer_acquire(PipelineState<kStages> const& st) const {
    Barrier::wait(&storage->empty[st.index], st.phase ^ 1);
  }
  CUTLASS_DEVICE void writer_commit(PipelineState<kStages> const& st, bool is_warp_leader) const {
    if (is_warp_leader) { Barrier::arrive(&storage->full[st.index]); }
  }
  CUTLASS_DEVICE void consumer_wait(PipelineState<kStages> const& st) const {
    Barrier::wait(&storage->full[st.index], st.phase);
  }
  CUTLASS_DEVICE void consumer_release(PipelineState<kStages> const& st, bool is_warpgroup_leader) const {
    if (is_warpgroup_leader) { Barrier::arrive(&storage->empty[st.index]); }
  }
};

template <int kHeadDim_, bool kHasLocal_, bool kHasSoftcap_>
struct Fp8FwdTraitsSm90 {
  using Element = cutlass::float_e4m3_t;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kHeadDimV = kHeadDim_;
  static constexpr bool kHasLocal = kHasLocal_;
  static constexpr bool kHasSoftcap = kHasSoftcap_;

  static constexpr Fp8TileConfig kConfig = fp8_tile_config_sm90(kHeadDim);
  static constexpr int kBlockM = kConfig.block_m;
  static constexpr int kBlockN = kConfig.block_n;
  static constexpr int kStages = kConfig.stages;
  static_assert(kBlockN % 32 == 0, "the P V GEMM's k (keys) comes in 32-element FP8 WGMMA steps");
  static_assert(kHeadDimV % 32 == 0, "the V transpose works on 4 x 4-byte blocks, 8 per 32 columns");
  static constexpr int kNumMmaWarpgroups = kBlockM / 64;
  static constexpr int kNumMmaThreads = kNumMmaWarpgroups * cutlass::NumThreadsPerWarpGroup;
  static constexpr int kNumThreads = kNumMmaThreads + cutlass::NumThreadsPerWarpGroup;
  // Producer warpgroup: warp 0 issues TMA, warps 1..3 transpose V.
  static constexpr int kNumTransposeWarps = 3;
  static constexpr bool kPingpong = kNumMmaWarpgroups == 2;
  // setmaxnreg moves registers within the CTA's launch allocation (384 threads x 168 = 64512 for 2 consumer
  // warpgroups): 128 x 24 + 256 x 240 fills it exactly. (32 + 240 asks for 1024 registers more than the CTA holds:
  // the consumers' setmaxnreg.inc then waits forever.) The ldmatrix/stmatrix transposer fits in 24 (the 32-bit one
  // needed 40, leaving the consumers 232); measured on the H100, 24 / 240 took hd256 from 756 / 793 to 780 / 836
  // TFLOPS at 8k / 16k (its 84 bytes of consumer spills went away) and left hd128 unchanged. 3 consumer warpgroups:
  // 512 x 128 = 65536 = 128 x 32 + 384 x 160.
  static constexpr int kProducerRegisters = kNumMmaWarpgroups == 2 ? 24 : 32;
  static constexpr int kConsumerRegisters = kNumMmaWarpgroups == 2 ? 240 : 160;
  static_assert(kProducerRegisters * 128 + kConsumerRegisters * kNumMmaThreads <=
                    (65536 / kNumThreads) / 8 * 8 * kNumThreads,
                "setmaxnreg budgets exceed the CTA's register allocation");

  using BlockM = cute::Int<kBlockM>;
  using BlockN = cute::Int<kBlockN>;
  using HeadDim = cute::Int<kHeadDim>;
  using HeadDimV = cute::Int<kHeadDimV>;
  using StagesT = cute::Int<kStages>;

  using AtomLayoutMma = cute::Layout<cute::Shape<cute::Int<kNumMmaWarpgroups>, cute::_1, cute::_1>>;
  using TiledMmaQK = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float, cute::Shape<cute::_64, BlockN, HeadDim>>(),
      AtomLayoutMma{}));
  // O += P V: P from registers, V^T (dv, keys) K-major in shared memory.
  using TiledMmaPV = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<Element, Element, float, cute::Shape<cute::_64, HeadDimV, BlockN>>(),
      AtomLayoutMma{}));

  using SmemLayoutQ = decltype(cute::tile_to_shape(
      cutlass::gemm::collective::detail::ss_smem_selector<cute::GMMA::Major::K, Element, BlockM, HeadDim>(),
      cute::Shape<BlockM, HeadDim>{}));
  using SmemLayoutK = decltype(cute::tile_to_shape(
      cutlass::gemm::collective::detail::ss_smem_selector<cute::GMMA::Major::K, Element, BlockN, HeadDim>(),
      cute::Shape<BlockN, HeadDim, StagesT>{}));
  // V as TMA delivers it: (keys, dv), dv contiguous.
  using SmemLayoutVraw = decltype(cute::tile_to_shape(
      cutlass::gemm::collective::detail::ss_smem_selector<cute::GMMA::Major::K, Element, BlockN, HeadDimV>(),
      cute::Shape<BlockN, HeadDimV, StagesT>{}));
  // V^T as the P V WGMMA reads it: (dv, keys), keys contiguous (K-major). Key position p inside each 16-key chunk
  // holds key sigma(p) (see mainloop_fwd_sm90_fp8_load.hpp), matching the register order of P.
  using SmemLayoutVt = decltype(cute::tile_to_shape(
      cutlass::gemm::collective::detail::ss_smem_selector<cute::GMMA::Major::K, Element, HeadDimV, BlockN>(),
      cute::Shape<HeadDimV, BlockN, StagesT>{}));

  using ShapeQKV = cute::Shape<int32_t, int32_t, int32_t, int32_t>;
  using StrideQKV = cute::Stride<int64_t, cute::_1, int64_t, int64_t>;

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
      cute::make_tensor(cute::make_gmem_ptr(static_cast<Element const*>(nullptr)), ShapeQKV{}, StrideQKV{}),
      cute::take<0, 2>(SmemLayoutVraw{}), cute::Shape<BlockN, HeadDimV>{}, cute::_1{}));

  static constexpr uint32_t kTmaBytesQ = kBlockM * kHeadDim;
  static constexpr uint32_t kTmaBytesK = kBlockN * kHeadDim;
  static constexpr uint32_t kTmaBytesV = kBlockN * kHeadDimV;

  using PipelineKV = TmaPipeline<kStages>;
  using PipelineVt = TransposePipeline<kStages>;

  // The epilogue's TMA store of the 16-bit output (collective/epilogue_fwd_shared_sm90.hpp; bf16 and fp16 share the
  // descriptor type, the store copies bits). Measured against the register stores (perf-notes F14): hdim 128 +1-9%,
  // hdim 256 unmasked +3-8% at 4k-8k; hdim 256 causal -3-8% (spills 40 -> 112 B) and hdim 64 unmasked -13% (3
  // warpgroups at 160 registers: 0 -> 40 B), so those keep the register stores. FLASH3_FWD_EXP & 262144: off (A/B).
  using OStaging = OStagingSm90<cutlass::bfloat16_t, kHeadDimV>;
  static constexpr bool kTmaStoreO =
      (FLASH3_FWD_EXP & 262144) == 0 && (kHeadDim == 128 || (kHeadDim == 256 && !kHasLocal)) &&
      kTmaBytesQ + kStages * (kTmaBytesK + 2 * kTmaBytesV) + kNumMmaWarpgroups * OStaging::kSlotBytes + 2048 <=
          227 * 1024;
  // FP8 stages O only in its own slots (no staging in V's stages, which the hdim 192 / 256 bf16 kernels use).
  static constexpr bool kOStagingInV = false;
  static constexpr bool kStagedO = kTmaStoreO;

  struct SharedStorage {
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutQ>> q;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutK>> k;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutVraw>> v_raw;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutVt>> vt;
    // O of each consumer warpgroup, for the TMA store (kTmaStoreO; a token 16 bytes otherwise).
    alignas(1024) cute::array_aligned<cutlass::bfloat16_t, kTmaStoreO ? kNumMmaWarpgroups * OStaging::kSlotElements : 8> o;
    typename PipelineKV::SharedStorage pipeline_k;
    typename PipelineKV::SharedStorage pipeline_vraw;
    typename PipelineVt::SharedStorage pipeline_vt;
    uint64_t q_full;
    uint64_t q_empty;
    TileHandOver tile_handover;  // dynamic tile walk: indices handed from the producer warp to the consumers
  };
  static constexpr int kSharedStorageBytes = sizeof(SharedStorage);
  static_assert(kSharedStorageBytes <= 227 * 1024, "FP8 tile config exceeds the 227 KB shared-memory limit");
};

}  // namespace flash3
