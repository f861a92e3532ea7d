// Consumer side of the sm90 backward: the five GEMMs of one step (query block) for one consumer warpgroup, and the
// fp32 dQ reduction into global memory. See bwd_kernel_traits_sm90.hpp for the math and the operand orientations.
//
// Order inside a step, chosen so the tensor cores always have queued work while the warpgroup does element-wise math:
//   issue S^T, issue dP^T | wait S^T, exp2 -> P^T (dP^T still running) | wait dP^T, dS^T |
//   issue dV += P^T dO | store dS^T to shared memory (dV running) | issue dK += dS^T Q |
//   both warpgroups' dS^T visible -> issue dQ = dS K | wait all, release Q/dO, dQ to shared memory, from where the
//   dQ writer warp (dq_writer_bwd_sm90.hpp) adds it into the fp32 accumulator while the next step runs.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "kernels/common/bwd_params.hpp"
#include "kernels/common/layout_utils.hpp"
#include "kernels/common/mask.hpp"
#include "kernels/common/named_barriers.hpp"
#include "kernels/common/softmax.hpp"
#include "kernels/sm90/bwd_kernel_traits_sm90.hpp"
#include "kernels/sm90/collective/bwd_scores_sm90.hpp"
#include "kernels/sm90/collective/dq_writer_bwd_sm90.hpp"
#include "kernels/sm90/wgmma_gemm.hpp"

namespace flash3 {

template <class Traits>
struct MainloopBwdSm90Mma {
  using Element = typename Traits::Element;
  using PipelineQ = typename Traits::PipelineQ;
  using State = PipelineState<Traits::kStages>;
  using TileShapeSt = cute::Shape<typename Traits::BlockN, typename Traits::BlockM>;  // (keys, queries)
  using TileShapedQ = cute::Shape<typename Traits::BlockM, typename Traits::HeadDim>;
  static constexpr int kDqBarrierThreads = Traits::kNumMmaThreads + Traits::kDqWriterThreads;

  template <class Params, class Work, class TensordK, class TensordV>
  CUTLASS_DEVICE static void compute_cta(Params const& params, typename Traits::SharedStorage& smem,
                                         PipelineQ const& pipeline_q, PipelineQ const& pipeline_do,
                                         int mma_thread_idx, Work const& work, TensordK& tdKrdK, TensordV& tdVrdV) {
    using namespace cute;
    BwdParams const& p = params.bwd;
    bool const is_wg_leader = (threadIdx.x % cutlass::NumThreadsPerWarpGroup) == 0;

    BwdSmemViews<Traits> const sm(smem);

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

    Tensor tSrK = thr_s.partition_fragment_A(sm.k);       // (MMA, MMA_M, MMA_K)
    Tensor tSrQ = thr_s.partition_fragment_B(sm.q);       // (MMA, MMA_N, MMA_K, PIPE)
    Tensor tdPrV = thr_dp.partition_fragment_A(sm.v);
    Tensor tdPrdO = thr_dp.partition_fragment_B(sm.dout);
    Tensor tdVrdOt = thr_dv.partition_fragment_B(sm.dout_t);  // (MMA, MMA_N, MMA_K, PIPE)
    Tensor tdKrQt = thr_dk.partition_fragment_B(sm.qt);
    Tensor tdQrdS = thr_dq.partition_fragment_A(sm.ds);    // (MMA, MMA_M, MMA_K, 2)
    Tensor tdQrKt = thr_dq.partition_fragment_B(sm.kt);

    Tensor tSrS = partition_fragment_C(mma_s, TileShapeSt{});  // S^T, then P^T (fp32)
    Tensor tdPrdP = partition_fragment_C(mma_dp, TileShapeSt{});  // dP^T, then dS^T
    Tensor tSrS_rc = make_tensor(tSrS.data(), accumulator_rowcol_layout(tSrS.layout()));
    Tensor tdPrdP_rc = make_tensor(tdPrdP.data(), accumulator_rowcol_layout(tdPrdP.layout()));
    Tensor tScS = thr_s.partition_C(make_identity_tensor(TileShapeSt{}));
    Tensor tScS_rc = make_tensor(tScS.data(), accumulator_rowcol_layout(tScS.layout()));
    Tensor tdQrdQ = partition_fragment_C(mma_dq, TileShapedQ{});
    static_assert(decltype(size(tdQrdQ))::value == Traits::kDqValuesPerThread);

    // dS^T registers -> shared memory with stmatrix (8x8 16-bit tiles, 16 contiguous bytes per row: the queries).
    auto r2s_ds = make_tiled_copy_C(Copy_Atom<SM90_U32x4_STSM_N, Element>{}, mma_s);
    auto thr_r2s_ds = r2s_ds.get_thread_slice(mma_thread_idx);
    Tensor tdSsdS = thr_r2s_ds.partition_D(sm.ds_t);  // (CPY, CPY_M, CPY_N, 2)


    cutlass::arch::ClusterTransactionBarrier::wait(&smem.kv_full, 0);

    State state;
    int step = 0;
    int const dq_slot_mask = p.deterministic ? 1 : 0;  // two dQ writers take alternate steps in deterministic mode
    for (int g = 0; g < work.group; ++g) {
      for (int visit = 0; visit < work.order.num_steps; ++visit, ++step) {
        int const m_block = work.order.m_at(visit);
        pipeline_q.consumer_wait(state);
        wgmma_gemm<true>(mma_s, tSrK, tSrQ(_, _, _, state.index), tSrS);
        pipeline_do.consumer_wait(state);
        wgmma_gemm<true>(mma_dp, tdPrV, tdPrdO(_, _, _, state.index), tdPrdP);
        warpgroup_wait<1>();  // S^T ready, dP^T still running

        bwd_scores_to_p_ds<Traits>(p, work, m_block, smem.lse_log2[state.index], smem.dpsum[state.index], tSrS_rc,
                                   tdPrdP_rc, tScS_rc);

        Tensor rP = convert_fragment<Element>(tSrS);
        Tensor tdVrP = make_tensor(rP.data(), accumulator_as_a_operand_layout(rP.layout()));
        wgmma_gemm<false>(mma_dv, tdVrP, tdVrdOt(_, _, _, state.index), tdVrdV);

        Tensor rdS = convert_fragment<Element>(tdPrdP);
        int const ds_buffer = step & 1;
        copy(r2s_ds, thr_r2s_ds.retile_S(rdS), tdSsdS(_, _, _, ds_buffer));
        Tensor tdKrdS = make_tensor(rdS.data(), accumulator_as_a_operand_layout(rdS.layout()));
        wgmma_gemm<false>(mma_dk, tdKrdS, tdKrQt(_, _, _, state.index), tdKrdK);

        // dQ = dS K needs both warpgroups' dS^T: make the generic-proxy stores visible to the WGMMA (async proxy),
        // then meet. Double buffering dS means this one barrier per step also orders the next step's stores after
        // the other warpgroup's dQ GEMM of the previous step (it waited for that GEMM before arriving here).
        cutlass::arch::fence_view_async_shared();
        named_barrier_sync(Traits::kNumMmaThreads, BwdNamedBarrier::kDsReady);
        wgmma_gemm<true>(mma_dq, tdQrdS(_, _, _, ds_buffer), tdQrKt, tdQrdQ);
        warpgroup_wait<0>();
        pipeline_q.consumer_release(state, is_wg_leader);
        pipeline_do.consumer_release(state, is_wg_leader);
        state.advance();

        // dQ of this key block -> shared memory (fragment order), for the writer warp's bulk reduce-add.
        named_barrier_sync(kDqBarrierThreads, dq_empty_barrier((step - 1) & dq_slot_mask));
        float4* dq_smem = reinterpret_cast<float4*>(smem.dq_acc_or_pt.data());
        CUTE_UNROLL
        for (int i = 0; i < Traits::kDqValuesPerThread / 4; ++i) {
          dq_smem[i * Traits::kNumMmaThreads + mma_thread_idx] =
              make_float4(tdQrdQ(4 * i), tdQrdQ(4 * i + 1), tdQrdQ(4 * i + 2), tdQrdQ(4 * i + 3));
        }
        cutlass::arch::fence_view_async_shared();
        named_barrier_arrive(kDqBarrierThreads, dq_full_barrier(step & dq_slot_mask));
      }
    }
  }
};

}  // namespace flash3
