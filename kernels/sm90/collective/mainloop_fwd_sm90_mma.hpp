// Consumer side of the sm90 forward mainloop: the WGMMAs and the online softmax of one consumer warpgroup.
//
// Intra-warpgroup overlap (FA3 paper, sec. 3.2): in trip n the warpgroup issues S_n = Q K_n^T, then
// O += P_{n-1} V_{n-1}, waits for S_n alone and runs its softmax while the P V GEMM is still on the tensor cores;
// only then waits for P V and rescales O by the new row maxima. P stays in registers (RS WGMMA).
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "kernels/common/layout_utils.hpp"
#include "kernels/common/mask.hpp"
#include "kernels/common/named_barriers.hpp"
#include "kernels/common/softmax.hpp"
#include "kernels/sm90/collective/epilogue_fwd_shared_sm90.hpp"
#include "kernels/sm90/fwd_kernel_traits_sm90.hpp"
#include "kernels/sm90/wgmma_gemm.hpp"

namespace flash3 {

// Pingpong turn-taking between two consumer warpgroups on named barriers: warpgroup w waits on barrier w (its own
// 128 threads plus the other warpgroup's 128 arrivals) and arrives on the other's. Warpgroup 1 arrives on barrier 0
// once at the start so warpgroup 0 goes first; warpgroup 0 consumes the matching extra arrival at the end.
CUTLASS_DEVICE void pingpong_wait_turn(int warpgroup) {
  named_barrier_sync(2 * cutlass::NumThreadsPerWarpGroup,
                     static_cast<FwdNamedBarrier>(int(FwdNamedBarrier::kWarpSchedulerWG1) + warpgroup));
}
CUTLASS_DEVICE void pingpong_pass_turn(int warpgroup) {
  named_barrier_arrive(2 * cutlass::NumThreadsPerWarpGroup,
                       static_cast<FwdNamedBarrier>(int(FwdNamedBarrier::kWarpSchedulerWG1) + (1 - warpgroup)));
}

template <class Traits>
struct MainloopFwdSm90Mma {
  using Element = typename Traits::Element;
  using PipelineKV = typename Traits::PipelineKV;
  using State = PipelineState<Traits::kStages>;
  using Mask = BlockMask<Traits::kBlockM, Traits::kBlockN, Traits::kHasLocal>;
  using TileShapeS = cute::Shape<typename Traits::BlockM, typename Traits::BlockN>;
  using TileShapeO = cute::Shape<typename Traits::BlockM, typename Traits::HeadDimV>;
  static constexpr int kRowsPerThread = 2;  // rows r and r + 8 of the warpgroup's 64
  using Softmax = OnlineSoftmax<kRowsPerThread, Traits::kFixedOffsetSoftmax>;

  State state_kv;
  PipelineState<Traits::kQStages> state_q;
  // kOStagingInV: this warpgroup's O store of its last tile with key blocks still has to release V to the producer
  // (release_o_staging).
  bool o_staging_owed = false;

  // Where this warpgroup stages O for the tile it just ran (has_trips) or that had no key block.
  CUTLASS_DEVICE OStagingSlot o_staging_slot(typename Traits::SharedStorage& smem, PipelineKV const& pipeline_v,
                                             int mma_thread_idx, bool has_trips) const {
    if constexpr (Traits::kOStagingInV) {
      if (!has_trips) { return {}; }
      static_assert(Traits::kStages == 2);
      // state_kv is one past the tile's last V use. Warpgroup 1 (the later one under pingpong) takes the stage of
      // that last use; warpgroup 0 the other stage, last used two blocks back (or by an earlier tile, or never: its
      // phase then reads as released).
      int const warpgroup = mma_thread_idx / cutlass::NumThreadsPerWarpGroup;
      State use = state_kv;
      if (warpgroup == 0) {
        use.phase ^= 1;
      } else {
        use.phase ^= use.index == 0 ? 1u : 0u;
        use.index ^= 1;
      }
      return {smem.v.data() + use.index * Traits::kVStageElements, pipeline_v.empty_barrier(use), use.phase};
    } else {
      return own_o_staging_slot<Traits>(smem, mma_thread_idx);
    }
  }

  // kOStagingInV: once the warpgroup's last O store has read its V stage, tell the producer (o_free), which holds the
  // next tile's V loads until both warpgroups did. Called before anything that waits for such a load.
  CUTLASS_DEVICE void release_o_staging(typename Traits::SharedStorage& smem, bool is_wg_leader) {
    if constexpr (Traits::kOStagingInV) {
      if (o_staging_owed) {
        if (is_wg_leader) {
          cute::tma_store_wait<0>();
          cutlass::arch::ClusterBarrier::arrive(&smem.o_free);
        }
        o_staging_owed = false;
      }
    }
  }

  // Runs the key-block loop of one tile; leaves the unnormalised O in tOrO and the row statistics in softmax.
  template <class Params, class TensorO>
  CUTLASS_DEVICE void compute_tile(Params const& params, typename Traits::SharedStorage& smem,
                                   PipelineKV const& pipeline_k, PipelineKV const& pipeline_v, int mma_thread_idx,
                                   TileCoord tile, Mask const& mask, typename Mask::Trips const& trips,
                                   TensorO& tOrO, Softmax& softmax) {
    using namespace cute;
    bool const is_wg_leader = (threadIdx.x % cutlass::NumThreadsPerWarpGroup) == 0;

    Tensor sQ = Traits::q_tile(smem, state_q.index);
    Tensor sK = make_tensor(make_smem_ptr(smem.k.data()), typename Traits::SmemLayoutK{});
    Tensor sVt = make_tensor(make_smem_ptr(smem.v.data()), typename Traits::SmemLayoutVt{});

    typename Traits::TiledMmaQK mma_qk;
    typename Traits::TiledMmaPV mma_pv;
    auto thr_qk = mma_qk.get_thread_slice(mma_thread_idx);
    auto thr_pv = mma_pv.get_thread_slice(mma_thread_idx);
    Tensor tSrQ = thr_qk.partition_fragment_A(sQ);   // (MMA, MMA_M, MMA_K) descriptors
    Tensor tSrK = thr_qk.partition_fragment_B(sK);   // (MMA, MMA_N, MMA_K, PIPE)
    Tensor tOrV = thr_pv.partition_fragment_B(sVt);  // (MMA, MMA_N, MMA_K, PIPE)

    Tensor tSrS = partition_fragment_C(mma_qk, TileShapeS{});  // (MMA, MMA_M, MMA_N) fp32
    Tensor tSrS_rc = make_tensor(tSrS.data(), accumulator_rowcol_layout(tSrS.layout()));
    Tensor tScS = thr_qk.partition_C(make_identity_tensor(TileShapeS{}));
    Tensor tScS_rc = make_tensor(tScS.data(), accumulator_rowcol_layout(tScS.layout()));
    Tensor tOrO_rc = make_tensor(tOrO.data(), accumulator_rowcol_layout(tOrO.layout()));
    // P in the input precision, viewed as the A operand of the P V WGMMA.
    Tensor tOrP_owner = cute::make_tensor<Element>(tSrS.layout());
    Tensor tOrP = make_tensor(tOrP_owner.data(), accumulator_as_a_operand_layout(tOrP_owner.layout()));

    auto score_transform = [&](auto& s_rc, int n_block, auto needs_mask) CUTLASS_LAMBDA_FUNC_INLINE {
      if constexpr (Traits::kHasSoftcap) {
        CUTE_UNROLL
        for (int i = 0; i < size(s_rc); ++i) { s_rc(i) = fast_tanh(s_rc(i) * params.fwd.softcap_inv_scaled); }
      }
      if constexpr (decltype(needs_mask)::value) { mask.apply(s_rc, tScS_rc, tile.m_block, n_block); }
    };
    // `needed`: the softmax step's warp-uniform "some factor is not 1" (always true without the lazy rescale).
    auto rescale_o = [&](float const (&correction)[kRowsPerThread], bool needed) CUTLASS_LAMBDA_FUNC_INLINE {
      if constexpr ((FLASH3_FWD_EXP & 4) != 0) { return; }  // DIAGNOSTIC
      if (!needed) { return; }
      CUTE_UNROLL
      for (int r = 0; r < kRowsPerThread; ++r) {
        CUTE_UNROLL
        for (int c = 0; c < size<1>(tOrO_rc); ++c) { tOrO_rc(r, c) *= correction[r]; }
      }
    };
    auto store_p = [&]() CUTLASS_LAMBDA_FUNC_INLINE {
      Tensor converted = convert_fragment<Element>(tSrS);
      CUTE_UNROLL
      for (int i = 0; i < size(converted); ++i) { tOrP_owner(i) = converted(i); }
    };

    // Pingpong: take our turn on the tensor cores before issuing, hand it to the other warpgroup right after, so
    // its GEMMs run under our softmax (FA3 paper, sec. 3.1).
    int const warpgroup = mma_thread_idx / cutlass::NumThreadsPerWarpGroup;
    auto begin_issue = [&]() CUTLASS_LAMBDA_FUNC_INLINE {
      if constexpr (Traits::kPingpong) { pingpong_wait_turn(warpgroup); }
    };
    auto end_issue = [&]() CUTLASS_LAMBDA_FUNC_INLINE {
      if constexpr (Traits::kPingpong) { pingpong_pass_turn(warpgroup); }
    };

    typename Traits::PipelineQ const pipeline_q{&smem.pipeline_q};
    pipeline_q.consumer_wait(state_q);

    // First trip (highest key block): S only, no P V yet. It is always a masked trip unless the block is interior.
    int n_block = trips.n_end - 1;
    float correction[kRowsPerThread] = {};  // set by every softmax step (left 0 only by the no-softmax DIAGNOSTIC)
    bool rescale = false;                   // whether O needs the correction (the step's return)
    {
      pipeline_k.consumer_wait(state_kv);
      begin_issue();
      wgmma_gemm<true>(mma_qk, tSrQ, tSrK(_, _, _, state_kv.index), tSrS);
      end_issue();
      release_o_staging(smem, is_wg_leader);  // under this Q K^T; the first P V needs the V it frees
      warpgroup_wait<0>();
      pipeline_k.consumer_release(state_kv, is_wg_leader);
      if (n_block >= trips.n_masked_hi || n_block < trips.n_masked_lo) {
        score_transform(tSrS_rc, n_block, cute::true_type{});
      } else {
        score_transform(tSrS_rc, n_block, cute::false_type{});
      }
      if constexpr ((FLASH3_FWD_EXP & 2) == 0) { rescale = softmax.template step<true>(tSrS_rc, correction); }
      store_p();
    }
    // O is rescaled for the previous block's max after Q K^T is issued and before P V: the multiplies run under the
    // Q K^T GEMM instead of between the P V wait and the next issue (perf-notes forward row 12).
    constexpr bool kRescaleUnderQK = (FLASH3_FWD_EXP & 64) == 0;

    // Trip for key block n_block < the previous one: overlapped S_n and P_{n+1} V_{n+1}.
    auto trip = [&](int n_block, auto needs_mask) CUTLASS_LAMBDA_FUNC_INLINE {
      State const state_prev = state_kv;
      state_kv.advance();
      pipeline_k.consumer_wait(state_kv);
      pipeline_v.consumer_wait(state_prev);
      begin_issue();
      if constexpr (Traits::kRebuildQDescriptors) {
        Tensor tSrQ_trip = thr_qk.partition_fragment_A(make_tensor(
            make_smem_ptr(opaque_pointer(Traits::q_buffer(smem, state_q.index))), typename Traits::SmemLayoutQ{}));
        wgmma_gemm<true>(mma_qk, tSrQ_trip, tSrK(_, _, _, state_kv.index), tSrS);
      } else {
        wgmma_gemm<true>(mma_qk, tSrQ, tSrK(_, _, _, state_kv.index), tSrS);
      }
      // O is not an operand of Q K^T: rescale it while that GEMM runs, before P V accumulates into it.
      if constexpr (kRescaleUnderQK) { rescale_o(correction, rescale); }
      wgmma_gemm<false>(mma_pv, tOrP, tOrV(_, _, _, state_prev.index), tOrO);
      end_issue();
      warpgroup_wait<1>();  // S_n is ready; P V still running
      pipeline_k.consumer_release(state_kv, is_wg_leader);
      score_transform(tSrS_rc, n_block, needs_mask);
      if constexpr ((FLASH3_FWD_EXP & 2) == 0) {
        rescale = softmax.template step<false>(tSrS_rc, correction);
        warpgroup_wait_after<0>(softmax.row_sum[kRowsPerThread - 1]);  // P V done: V's stage and P are free
      } else {
        warpgroup_wait<0>();
      }
      pipeline_v.consumer_release(state_prev, is_wg_leader);
      if constexpr (!kRescaleUnderQK) { rescale_o(correction, rescale); }
      store_p();
    };

    --n_block;
    for (; n_block >= trips.n_masked_hi && n_block >= trips.n_begin; --n_block) { trip(n_block, cute::true_type{}); }
    for (; n_block >= trips.n_masked_lo; --n_block) { trip(n_block, cute::false_type{}); }
    for (; n_block >= trips.n_begin; --n_block) { trip(n_block, cute::true_type{}); }

    // Q is no longer read: the producer may refill this buffer while the last P V and the epilogue run.
    pipeline_q.consumer_release(state_q, is_wg_leader);
    state_q.advance();

    pipeline_v.consumer_wait(state_kv);
    if constexpr (kRescaleUnderQK) { rescale_o(correction, rescale); }
    begin_issue();
    wgmma_gemm<false>(mma_pv, tOrP, tOrV(_, _, _, state_kv.index), tOrO);
    end_issue();
    warpgroup_wait<0>();
    pipeline_v.consumer_release(state_kv, is_wg_leader);
    state_kv.advance();
    o_staging_owed = Traits::kOStagingInV;
  }
};

}  // namespace flash3
