// Consumer side of the sm90 backward for head dims above 128 (the "head-dim split" tiling of
// bwd_kernel_traits_sm90.hpp): 64 keys per CTA, both warpgroups on all of them.
//
// Per step: each warpgroup computes S^T and dP^T for its half of the query block (N split), turns them into P^T and
// dS^T, and writes both to shared memory; after a barrier each warpgroup issues dQ = dS K in column chunks (one
// accumulator each), then dV += P^T dO and dK += dS^T Q for its half of dv / d (SS GEMMs, N split), and adds each dQ
// chunk into the fp32 accumulator as soon as it is done, with fire-and-forget vector reductions (red, no returned
// data) in fragment order (the postprocess reads that order back). The kernel is bound by L2 throughput, mostly
// these reductions (docs/perf-notes.md B9, B11).
//
// Deterministic mode: before its first reduction of a step the warpgroups meet the turn-keeper warp
// (DqTurnKeeperBwdSm90), which has already waited for the step's ticket; once their reductions are issued they
// arrive at kDqTurn and go on, and the keeper fences and passes the turn (dq_writer_bwd_sm90.hpp). Until
// docs/perf-notes.md B15 the consumers passed it themselves (fence, barrier, signal) in the next step, after its
// softmax, which left the successor at that block (a step behind, BwdQueryOrder's stagger) almost no slack.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "kernels/common/bwd_params.hpp"
#include "kernels/common/layout_utils.hpp"
#include "kernels/common/named_barriers.hpp"
#include "kernels/sm90/bwd_kernel_traits_sm90.hpp"
#include "kernels/sm90/collective/bwd_scores_sm90.hpp"
#include "kernels/sm90/collective/dq_writer_bwd_sm90.hpp"
#include "kernels/sm90/wgmma_gemm.hpp"

namespace flash3 {

template <class Traits>
struct MainloopBwdSm90MmaSplitD {
  using Element = typename Traits::Element;
  using PipelineQ = typename Traits::PipelineQ;
  using State = PipelineState<Traits::kStages>;
  using TileShapeSt = cute::Shape<typename Traits::BlockN, typename Traits::BlockM>;  // (keys, queries)
  using TileShapedQ = cute::Shape<typename Traits::BlockM, typename Traits::DqChunk>;
  static_assert(Traits::kSplitHeadDim);

  template <class Params, class Work, class TensordK, class TensordV>
  CUTLASS_DEVICE static void compute_cta(Params const& params, typename Traits::SharedStorage& smem,
                                         PipelineQ const& pipeline_q, PipelineQ const& pipeline_do,
                                         int mma_thread_idx, Work const& work, TensordK& tdKrdK, TensordV& tdVrdV) {
    using namespace cute;
    BwdParams const& p = params.bwd;
    bool const is_wg_leader = (threadIdx.x % cutlass::NumThreadsPerWarpGroup) == 0;

    BwdSmemViews<Traits> const sm(smem);
    Tensor sPt = make_tensor(make_smem_ptr(smem.dq_acc_or_pt.data()), typename Traits::SmemLayoutPt{});

    typename Traits::TiledMmaS mma_s;
    typename Traits::TiledMmadP mma_dp;
    typename Traits::TiledMmadV mma_dv;
    typename Traits::TiledMmadK mma_dk;
    typename Traits::TiledMmadQ mma_dq;
    auto thr_s = mma_s.get_thread_slice(mma_thread_idx);
    auto thr_dp = mma_dp.get_thread_slice(mma_thread_idx);
    auto thr_dv = mma_dv.get_thread_slice(mma_thread_idx);
    auto thr_dk = mma_dk.get_thread_slice(mma_thread_idx);
    auto thr_dq = mma_dq.get_thread_slice(mma_thread_idx);

    Tensor tSrK = thr_s.partition_fragment_A(sm.k);        // (MMA, MMA_M, MMA_K)
    Tensor tSrQ = thr_s.partition_fragment_B(sm.q);        // (MMA, MMA_N, MMA_K, PIPE)
    Tensor tdPrV = thr_dp.partition_fragment_A(sm.v);
    Tensor tdPrdO = thr_dp.partition_fragment_B(sm.dout);
    Tensor tdVrPt = thr_dv.partition_fragment_A(sPt);    // (MMA, MMA_M, MMA_K, 2)
    Tensor tdVrdOt = thr_dv.partition_fragment_B(sm.dout_t);  // (MMA, MMA_N, MMA_K, PIPE)
    Tensor tdKrdSt = thr_dk.partition_fragment_A(sm.ds_t);
    Tensor tdKrQt = thr_dk.partition_fragment_B(sm.qt);
    Tensor tdQrdS = thr_dq.partition_fragment_A(sm.ds);    // (MMA, MMA_M, MMA_K, 2)

    Tensor tSrS = partition_fragment_C(mma_s, TileShapeSt{});
    Tensor tdPrdP = partition_fragment_C(mma_dp, TileShapeSt{});
    Tensor tSrS_rc = make_tensor(tSrS.data(), accumulator_rowcol_layout(tSrS.layout()));
    Tensor tdPrdP_rc = make_tensor(tdPrdP.data(), accumulator_rowcol_layout(tdPrdP.layout()));
    Tensor tScS = thr_s.partition_C(make_identity_tensor(TileShapeSt{}));
    Tensor tScS_rc = make_tensor(tScS.data(), accumulator_rowcol_layout(tScS.layout()));
    // One dQ accumulator per column chunk: (MMA, MMA_M, MMA_N, chunk).
    Tensor tdQrdQ_chunk = partition_fragment_C(mma_dq, TileShapedQ{});
    static_assert(decltype(size(tdQrdQ_chunk))::value == Traits::kDqValuesPerThread);
    static_assert(decltype(size<1>(tdQrdQ_chunk))::value == 1 && decltype(size<2>(tdQrdQ_chunk))::value == 1);
    Tensor tdQrdQ = cute::make_tensor<float>(append(tdQrdQ_chunk.shape(), Int<Traits::kDqChunks>{}));

    auto r2s = make_tiled_copy_C(Copy_Atom<SM90_U32x4_STSM_N, Element>{}, mma_s);
    auto thr_r2s = r2s.get_thread_slice(mma_thread_idx);
    Tensor tPsP = thr_r2s.partition_D(sPt);    // (CPY, CPY_M, CPY_N, 2)
    Tensor tdSsdS = thr_r2s.partition_D(sm.ds_t);

    cutlass::arch::ClusterTransactionBarrier::wait(&smem.kv_full, 0);

    State state;
    int step = 0;
    for (int g = 0; g < work.group; ++g) {
      int const head = work.head_k * work.group + g;
      int64_t const scratch_row = bwd_scratch_row(p, work.batch, head);
      for (int visit = 0; visit < work.order.num_steps; ++visit, ++step) {
        int const m_block = work.order.m_at(visit);
        pipeline_q.consumer_wait(state);
        wgmma_gemm<true>(mma_s, tSrK, tSrQ(_, _, _, state.index), tSrS);
        pipeline_do.consumer_wait(state);
        wgmma_gemm<true>(mma_dp, tdPrV, tdPrdO(_, _, _, state.index), tdPrdP);
        warpgroup_wait<1>();
        bwd_scores_to_p_ds<Traits>(p, work, m_block, smem.lse_log2[state.index], smem.dpsum[state.index], tSrS_rc,
                                   tdPrdP_rc, tScS_rc);

        // Both halves of P^T and dS^T to shared memory (double-buffered: the barrier below also orders these
        // stores after the other warpgroup's GEMMs of two steps ago, which it waited for before arriving).
        int const buffer = step & 1;
        Tensor rP = convert_fragment<Element>(tSrS);
        Tensor rdS = convert_fragment<Element>(tdPrdP);
        copy(r2s, thr_r2s.retile_S(rP), tPsP(_, _, _, buffer));
        copy(r2s, thr_r2s.retile_S(rdS), tdSsdS(_, _, _, buffer));
        cutlass::arch::fence_view_async_shared();
        named_barrier_sync(Traits::kNumMmaThreads, BwdNamedBarrier::kDsReady);

        // dQ's column chunks are issued first, each into its own accumulator, so that the reductions of each run
        // while the later GEMMs (the next chunk, dV, dK) are on the tensor cores; in issue order the groups
        // complete chunk 0, ..., dV, dK (perf-notes B9).
        CUTE_UNROLL
        for (int chunk = 0; chunk < Traits::kDqChunks; ++chunk) {
          Tensor sKt_chunk = local_tile(sm.kt, Shape<typename Traits::DqChunk, typename Traits::BlockN>{},
                                        make_coord(chunk, _0{}));
          Tensor tdQrKt = thr_dq.partition_fragment_B(sKt_chunk);
          Tensor tdQrdQ_acc = tdQrdQ(_, _, _, chunk);
          wgmma_gemm<true>(mma_dq, tdQrdS(_, _, _, buffer), tdQrKt, tdQrdQ_acc);
        }
        wgmma_gemm<false>(mma_dv, tdVrPt(_, _, _, buffer), tdVrdOt(_, _, _, state.index), tdVrdV);
        wgmma_gemm<false>(mma_dk, tdKrdSt(_, _, _, buffer), tdKrQt(_, _, _, state.index), tdKrdK);

        float4* dq_block = reinterpret_cast<float4*>(
            p.dq_accum + (scratch_row + int64_t(m_block) * Traits::kBlockM) * Traits::kHeadDim);
        if (p.deterministic) {
          named_barrier_sync(Traits::kNumMmaThreads + cutlass::NumThreadsPerWarp, BwdNamedBarrier::kDqTurnGranted);
        }
        auto add_chunk = [&](auto chunk) CUTLASS_LAMBDA_FUNC_INLINE {
          constexpr int kChunk = decltype(chunk)::value;
          warpgroup_wait<Traits::kDqChunks - 1 - kChunk + 2>();  // chunk done; later chunks, dV and dK may run
          constexpr int kVec = Traits::kDqValuesPerThread / 4;
          CUTE_UNROLL
          for (int i = 0; i < kVec; ++i) {
            red_add_f32x4(dq_block + (kChunk * kVec + i) * Traits::kNumMmaThreads + mma_thread_idx,
                          tdQrdQ(4 * i, 0, 0, kChunk), tdQrdQ(4 * i + 1, 0, 0, kChunk),
                          tdQrdQ(4 * i + 2, 0, 0, kChunk), tdQrdQ(4 * i + 3, 0, 0, kChunk));
          }
        };
        for_each(make_int_sequence<Traits::kDqChunks>{}, add_chunk);
        if (p.deterministic) {  // additions issued: the keeper passes the turn on
          named_barrier_arrive(Traits::kNumMmaThreads + cutlass::NumThreadsPerWarp, BwdNamedBarrier::kDqTurn);
        }
        warpgroup_wait<0>();  // dV and dK done: Q and dO are free
        pipeline_q.consumer_release(state, is_wg_leader);
        pipeline_do.consumer_release(state, is_wg_leader);
        state.advance();
      }
    }
  }
};

}  // namespace flash3
