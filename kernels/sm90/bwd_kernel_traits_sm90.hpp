// Compile-time shapes of the sm90 backward: tiles, WGMMA atoms, shared-memory layouts, TMA types, shared storage.
//
// One CTA owns kBlockN keys of one (batch, kv head) and walks the query blocks (kBlockM rows) of every query head of
// its GQA group, so dK and dV stay in registers for the whole CTA and are written once, with no reduction across
// CTAs. Each of the 2 consumer warpgroups owns 64 of the keys. Per query block every warpgroup computes, for its keys:
//   S^T  = K Q^T            (SS)      P^T  = exp2(S^T * scale_log2 - lse_log2)
//   dP^T = V dO^T           (SS)      dS^T = P^T * (dP^T - D)  (times the softcap derivative)
//   dV  += P^T dO           (RS: P^T straight from the registers that hold it)
//   dK  += dS^T Q           (RS)
// and both warpgroups together, after writing dS^T to shared memory:
//   dQ   = dS K             (SS, the head dim split between the warpgroups), added into an fp32 accumulator in global
//                           memory (the one cross-CTA reduction; ordered by semaphores in deterministic mode).
// Computing the transposed scores puts keys on the accumulator rows, which is what lets P^T and dS^T feed the dV/dK
// GEMMs as register A operands. Q, dO and K are each read by GEMMs in both orientations; the transposed views are
// the same shared memory, viewed MN-major (a K-major tile of (rows, d) is exactly an MN-major tile of (d, rows)).
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/gemm/collective/builders/sm90_common.inl>

#include "kernels/common/bwd_params.hpp"
#include "kernels/common/pipeline_tma.hpp"

namespace flash3 {

template <class Element_, int kHeadDim_, int kHeadDimV_, bool kHasLocal_, bool kHasSoftcap_>
struct BwdTraitsSm90 {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kHeadDimV = kHeadDimV_;
  static constexpr bool kHasLocal = kHasLocal_;
  static constexpr bool kHasSoftcap = kHasSoftcap_;
  // Registers: dK and dV accumulators take (d + dv) / 2 fp32 per thread for the 64 keys a warpgroup owns. That fits
  // 240 registers for d <= 128 ("key split": each warpgroup owns 64 of 128 keys, P^T and dS^T feed dV/dK from
  // registers). Larger head dims split the head dim instead ("head-dim split"): 64 keys per CTA, each warpgroup
  // computes S^T / dP^T for half of the query block, both write P^T and dS^T to shared memory, and each accumulates
  // dV, dK for half of dv / d (SS GEMMs) and dQ in two column chunks, which it adds into the fp32 accumulator
  // with vector reductions (shared memory is full: K, V, 2 stages of Q and dO, P^T and dS^T take 224 KB at d = 256).
  static constexpr bool kSplitHeadDim = kHeadDim > 128 || kHeadDimV > 128;
  static_assert(kHeadDim <= 256 && kHeadDimV <= 256);

  static constexpr int kBlockM = 64;                     // query rows per step
  static constexpr int kBlockN = kSplitHeadDim ? 64 : 128;  // keys per CTA
  static constexpr int kStages = 2;    // Q / dO pipeline depth
  static constexpr int kNumMmaWarpgroups = 2;
  static constexpr int kNumMmaThreads = kNumMmaWarpgroups * cutlass::NumThreadsPerWarpGroup;
  static constexpr int kNumThreads = kNumMmaThreads + cutlass::NumThreadsPerWarpGroup;
  static constexpr int kDqWriterThreads = 32;  // warp 1 of the producer warpgroup (see dq_writer_bwd_sm90.hpp)
  static constexpr int kProducerRegisters = 24;
  static constexpr int kConsumerRegisters = 240;
  static_assert(kBwdScratchRowPad % kBlockM == 0);

  using BlockM = cute::Int<kBlockM>;
  using BlockN = cute::Int<kBlockN>;
  using HeadDim = cute::Int<kHeadDim>;
  using HeadDimV = cute::Int<kHeadDimV>;
  using StagesT = cute::Int<kStages>;

  using AtomKeys = cute::Layout<cute::Shape<cute::Int<kNumMmaWarpgroups>, cute::_1, cute::_1>>;  // split keys (M)
  using AtomDim = cute::Layout<cute::Shape<cute::_1, cute::Int<kNumMmaWarpgroups>, cute::_1>>;   // split d (N)
  // Per-warpgroup GEMM shapes of the two tilings (see the comment at the top of the struct).
  static constexpr int kSN = kSplitHeadDim ? kBlockM / kNumMmaWarpgroups : kBlockM;  // queries of S^T per warpgroup
  static constexpr int kDqChunks = kSplitHeadDim ? 2 : 1;                            // dQ column chunks per step
  static constexpr int kDqN = kHeadDim / kDqChunks / kNumMmaWarpgroups;              // dQ columns per warpgroup
  using AtomS = cute::conditional_t<kSplitHeadDim, AtomDim, AtomKeys>;
  using TiledMmaS = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float, cute::Shape<cute::_64, cute::Int<kSN>, HeadDim>>(),
      AtomS{}));
  using TiledMmadP = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float, cute::Shape<cute::_64, cute::Int<kSN>, HeadDimV>>(),
      AtomS{}));
  template <int kN>
  using TiledMmaKeyRows = cute::conditional_t<
      kSplitHeadDim,
      decltype(cute::make_tiled_mma(  // P^T / dS^T from shared memory, N split between the warpgroups
          cute::GMMA::ss_op_selector<Element, Element, float,
                                     cute::Shape<cute::_64, cute::Int<kN / kNumMmaWarpgroups>, BlockM>,
                                     cute::GMMA::Major::K, cute::GMMA::Major::MN>(),
          AtomDim{})),
      decltype(cute::make_tiled_mma(  // P^T / dS^T from registers, each warpgroup its 64 keys
          cute::GMMA::rs_op_selector<Element, Element, float, cute::Shape<cute::_64, cute::Int<kN>, BlockM>,
                                     cute::GMMA::Major::K, cute::GMMA::Major::MN>(),
          AtomKeys{}))>;
  using TiledMmadV = TiledMmaKeyRows<kHeadDimV>;
  using TiledMmadK = TiledMmaKeyRows<kHeadDim>;
  using TiledMmadQ = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float, cute::Shape<BlockM, cute::Int<kDqN>, BlockN>,
                                 cute::GMMA::Major::MN, cute::GMMA::Major::MN>(),
      AtomDim{}));
  using DqChunk = cute::Int<kDqN * kNumMmaWarpgroups>;  // columns of dQ one TiledMmadQ call covers

  // K-major tiles of (rows, d) and their MN-major transposed views (d, rows): see the header comment.
  template <int kRows, int kCols, int kDepth>
  using KMajorTile = decltype(cute::tile_to_shape(
      cutlass::gemm::collective::detail::ss_smem_selector<cute::GMMA::Major::K, Element, cute::Int<kRows>,
                                                          cute::Int<kCols>>(),
      cute::Shape<cute::Int<kRows>, cute::Int<kCols>, cute::Int<kDepth>>{}));
  template <class Tile, int kRows, int kCols, int kDepth>
  using Transposed = decltype(cute::composition(
      Tile{}, cute::make_layout(cute::Shape<cute::Int<kCols>, cute::Int<kRows>, cute::Int<kDepth>>{},
                                cute::Stride<cute::Int<kRows>, cute::_1, cute::Int<kRows * kCols>>{})));

  // Q, dO and K are also MN-major B operands (of dK, dV and dQ) whose N (a head dim) may be split between the
  // warpgroups: each part must be whole swizzle atoms (an MN-major atom spans 64 / 32 / 16 elements for 128 / 64 /
  // 32-byte swizzles), so each tile takes the widest swizzle whose atom divides its per-warpgroup N.
  template <int kN>
  using SwizzleAtomFor = cute::conditional_t<
      kN % 64 == 0, cute::GMMA::Layout_K_SW128_Atom<Element>,
      cute::conditional_t<kN % 32 == 0, cute::GMMA::Layout_K_SW64_Atom<Element>,
                          cute::GMMA::Layout_K_SW32_Atom<Element>>>;
  template <int kN, int kRows, int kCols, int kDepth>
  using SwizzledTile = decltype(cute::tile_to_shape(
      SwizzleAtomFor<kN>{}, cute::Shape<cute::Int<kRows>, cute::Int<kCols>, cute::Int<kDepth>>{}));
  static constexpr int kDkN = kSplitHeadDim ? kHeadDim / kNumMmaWarpgroups : kHeadDim;    // dK columns per WG
  static constexpr int kDvN = kSplitHeadDim ? kHeadDimV / kNumMmaWarpgroups : kHeadDimV;  // dV columns per WG

  using SmemLayoutQ = SwizzledTile<kDkN, kBlockM, kHeadDim, kStages>;
  using SmemLayoutQt = Transposed<SmemLayoutQ, kBlockM, kHeadDim, kStages>;
  using SmemLayoutdO = SwizzledTile<kDvN, kBlockM, kHeadDimV, kStages>;
  using SmemLayoutdOt = Transposed<SmemLayoutdO, kBlockM, kHeadDimV, kStages>;
  using SmemLayoutK = SwizzledTile<kDqN, kBlockN, kHeadDim, 1>;
  using SmemLayoutKt = Transposed<SmemLayoutK, kBlockN, kHeadDim, 1>;
  using SmemLayoutV = KMajorTile<kBlockN, kHeadDimV, 1>;
  // dS^T as the warpgroups hold it (keys, queries), double-buffered; dS is its (queries, keys) view for dQ = dS K.
  using SmemLayoutdSt = KMajorTile<kBlockN, kBlockM, 2>;
  using SmemLayoutdS = Transposed<SmemLayoutdSt, kBlockN, kBlockM, 2>;
  using SmemLayoutPt = SmemLayoutdSt;  // head-dim split only: P^T for the dV GEMM

  using ShapeQKV = cute::Shape<int32_t, int32_t, int32_t, int32_t>;  // (rows, d, heads, batch)
  using StrideQKV = cute::Stride<int64_t, cute::_1, int64_t, int64_t>;
  template <class SmemLayout, class TileShape>
  using Tma = decltype(cute::make_tma_copy(
      cute::SM90_TMA_LOAD{},
      cute::make_tensor(cute::make_gmem_ptr(static_cast<Element const*>(nullptr)), ShapeQKV{}, StrideQKV{}),
      cute::take<0, 2>(SmemLayout{}), TileShape{}, cute::_1{}));
  using TmaQ = Tma<SmemLayoutQ, cute::Shape<BlockM, HeadDim>>;
  using TmadO = Tma<SmemLayoutdO, cute::Shape<BlockM, HeadDimV>>;
  using TmaK = Tma<SmemLayoutK, cute::Shape<BlockN, HeadDim>>;
  using TmaV = Tma<SmemLayoutV, cute::Shape<BlockN, HeadDimV>>;

  // The row statistics (lse_log2, dpsum) come by TMA as well: a box of kBlockM floats of (scratch rows, batch x
  // heads). (A 1-D bulk copy did the same job, but compute-sanitizer's racecheck does not follow the mbarrier
  // ordering of non-tensor bulk copies and reported every stage refill as a WAR hazard.)
  using ShapeStat = cute::Shape<int32_t, int32_t>;
  using StrideStat = cute::Stride<cute::_1, int64_t>;
  using SmemLayoutStat = cute::Layout<cute::Shape<BlockM, cute::_1, cute::Int<kStages>>>;  // = float[kStages][kBlockM]
  using TmaStat = decltype(cute::make_tma_copy(
      cute::SM90_TMA_LOAD{},
      cute::make_tensor(cute::make_gmem_ptr(static_cast<float const*>(nullptr)), ShapeStat{}, StrideStat{}),
      cute::take<0, 2>(SmemLayoutStat{}), cute::Shape<BlockM, cute::_1>{}, cute::_1{}));
  static constexpr uint32_t kRowStatBytes = kBlockM * sizeof(float);  // one lse_log2 or dpsum slice
  static constexpr uint32_t kTmaBytesQ = kBlockM * kHeadDim * sizeof(Element) + kRowStatBytes;
  static constexpr uint32_t kTmaBytesdO = kBlockM * kHeadDimV * sizeof(Element) + kRowStatBytes;
  static constexpr uint32_t kTmaBytesKV = kBlockN * (kHeadDim + kHeadDimV) * sizeof(Element);

  // dQ of one step goes consumer registers -> shared memory -> one bulk reduce-add into the fp32 accumulator. The
  // shared (and so the global) order is fragment order, interleaved by float4: element i of consumer thread t sits
  // at float4 index (i / 4) * kNumMmaThreads + t, so the consumers' 16-byte stores are bank-conflict free. The
  // postprocess maps the order back to (row, col) with the same MMA partition.
  static constexpr int kDqValuesPerThread = kBlockM * kHeadDim / kNumMmaThreads / kDqChunks;
  static_assert(kDqValuesPerThread % 4 == 0);
  static constexpr uint32_t kDqBytes = kBlockM * kHeadDim * sizeof(float);

  using PipelineQ = TmaPipeline<kStages>;  // Q + lse_log2 slice; also used for dO + dpsum slice

  struct SharedStorage {
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutK>> k;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutV>> v;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutQ>> q;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutdO>> dout;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutdSt>> ds;
    // Key split: the dQ tile handed to the writer warp. Head-dim split: P^T (dQ goes out as reductions there).
    alignas(1024) cute::conditional_t<kSplitHeadDim, cute::array_aligned<Element, cute::cosize_v<SmemLayoutPt>>,
                                      cute::array_aligned<float, kBlockM * kHeadDim>> dq_acc_or_pt;
    alignas(128) float lse_log2[kStages][kBlockM];
    alignas(128) float dpsum[kStages][kBlockM];
    typename PipelineQ::SharedStorage pipeline_q;
    typename PipelineQ::SharedStorage pipeline_do;
    uint64_t kv_full;  // transaction barrier: this CTA's K and V landed
  };
  static constexpr int kSharedStorageBytes = sizeof(SharedStorage);
  static_assert(kSharedStorageBytes <= 227 * 1024, "tile config exceeds the 227 KB shared-memory limit");
};

// The shared-memory tiles of a backward CTA as CuTe tensors, in both orientations (see the comment at the top).
// K and V drop their depth-1 mode.
template <class Traits>
struct BwdSmemViews {
  using Element = typename Traits::Element;
  template <class Layout>
  using View = decltype(cute::make_tensor(cute::make_smem_ptr(static_cast<Element*>(nullptr)), Layout{}));
  template <class Layout>
  using Slice = decltype(std::declval<View<Layout>>()(cute::_, cute::_, cute::_0{}));
  template <class Layout>
  CUTLASS_DEVICE static View<Layout> view(Element* data) {
    return cute::make_tensor(cute::make_smem_ptr(data), Layout{});
  }

  Slice<typename Traits::SmemLayoutK> k;
  Slice<typename Traits::SmemLayoutKt> kt;
  Slice<typename Traits::SmemLayoutV> v;
  View<typename Traits::SmemLayoutQ> q;      // (queries, d, stage)
  View<typename Traits::SmemLayoutQt> qt;    // (d, queries, stage)
  View<typename Traits::SmemLayoutdO> dout;
  View<typename Traits::SmemLayoutdOt> dout_t;
  View<typename Traits::SmemLayoutdSt> ds_t;  // (keys, queries, buffer)
  View<typename Traits::SmemLayoutdS> ds;     // (queries, keys, buffer)

  CUTLASS_DEVICE explicit BwdSmemViews(typename Traits::SharedStorage& s)
      : k(view<typename Traits::SmemLayoutK>(s.k.data())(cute::_, cute::_, cute::_0{})),
        kt(view<typename Traits::SmemLayoutKt>(s.k.data())(cute::_, cute::_, cute::_0{})),
        v(view<typename Traits::SmemLayoutV>(s.v.data())(cute::_, cute::_, cute::_0{})),
        q(view<typename Traits::SmemLayoutQ>(s.q.data())),
        qt(view<typename Traits::SmemLayoutQt>(s.q.data())),
        dout(view<typename Traits::SmemLayoutdO>(s.dout.data())),
        dout_t(view<typename Traits::SmemLayoutdOt>(s.dout.data())),
        ds_t(view<typename Traits::SmemLayoutdSt>(s.ds.data())),
        ds(view<typename Traits::SmemLayoutdS>(s.ds.data())) {}
};

}  // namespace flash3
