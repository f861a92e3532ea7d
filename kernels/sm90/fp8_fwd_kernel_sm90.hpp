// The sm90 (Hopper) FP8 forward kernel: warp-specialised, persistent, e4m3 inputs, bf16/fp16 output.
//
//   warpgroup 0, warp 0      producer: one thread issues the TMA loads of Q, K and V (V into a staging buffer)
//   warpgroup 0, warps 1..3  V transposer: staging (keys, dv) -> V^T (dv, keys) for the K-major P V WGMMA
//   warpgroups 1..2          consumers: WGMMA + online softmax (MainloopFwdSm90Fp8Mma), then the epilogue
//
// All roles walk the same tile sequence and key-block trips, so the three pipelines (K, V staging, V^T) stay in step.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/cutlass.h>

#include "kernels/common/fwd_params.hpp"
#include "kernels/common/tile_scheduler.hpp"
#include "kernels/sm90/collective/epilogue_fwd_sm90_fp8.hpp"
#include "kernels/sm90/collective/mainloop_fwd_sm90_fp8_load.hpp"
#include "kernels/sm90/collective/mainloop_fwd_sm90_fp8_mma.hpp"
#include "kernels/sm90/fp8_fwd_traits_sm90.hpp"

namespace flash3 {

template <class Traits_>
struct Fp8FwdKernelSm90 {
  using Traits = Traits_;
  using TileOrder = HeadMajorTileOrder;
  static constexpr int kNumTransposeThreads = Traits::kNumTransposeWarps * cutlass::NumThreadsPerWarp;
  // The dynamic walk hands each index from producer warp 0 to everyone else: consumers and transposer warps, through
  // the ring of mbarrier-guarded slots (tile_scheduler.hpp: no named barrier spanning the whole CTA).
  using TileWalk = cute::conditional_t<
      Traits::kHasLocal,
      DynamicTileWalk<Traits::kNumMmaThreads + kNumTransposeThreads, TileHandOverMode::kMbarrier>, StaticTileWalk>;
  using Mask = BlockMask<Traits::kBlockM, Traits::kBlockN, Traits::kHasLocal>;

  struct Params {
    FwdParams fwd;
    typename Traits::ShapeQKV shape_q, shape_k, shape_v;
    typename Traits::TmaQ tma_q;
    typename Traits::TmaK tma_k;
    typename Traits::TmaV tma_v;
    typename Traits::OStaging::Params o_staging;  // the TMA-store epilogue (Traits::kTmaStoreO)
    TileOrder order;
    TileWalk walk;
  };

  struct TileWork {
    TileCoord tile;
    SeqlenInfo seq;
    Mask mask;
    typename Mask::Trips trips;
    bool has_rows;
  };
  CUTLASS_DEVICE static TileWork tile_work(Params const& params, int t) {
    FwdParams const& p = params.fwd;
    TileCoord const tile = params.order.coord(t);
    SeqlenInfo const seq(p, tile.batch);
    Mask const mask(seq.seqlen_q, seq.seqlen_k, p.window_left, p.window_right);
    return {tile, seq, mask, mask.trips(tile.m_block), tile.m_block * Traits::kBlockM < seq.seqlen_q};
  }

  CUTLASS_DEVICE void operator()(Params const& params, char* smem_raw) const {
    using namespace cute;
    auto& smem = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);
    int const warp_idx = cutlass::canonical_warp_idx_sync();
    int const warpgroup_idx = cutlass::canonical_warp_group_idx();

    if (warp_idx == 0 && cute::elect_one_sync()) {
      cute::prefetch_tma_descriptor(params.tma_q.get_tma_descriptor());
      cute::prefetch_tma_descriptor(params.tma_k.get_tma_descriptor());
      cute::prefetch_tma_descriptor(params.tma_v.get_tma_descriptor());
      Traits::PipelineKV::init(&smem.pipeline_k, Traits::kNumMmaWarpgroups);
      Traits::PipelineKV::init(&smem.pipeline_vraw, Traits::kNumTransposeWarps);
      TileWalk::init(&smem.tile_handover);
      Traits::PipelineVt::init(&smem.pipeline_vt, Traits::kNumTransposeWarps, Traits::kNumMmaWarpgroups);
      cutlass::arch::ClusterTransactionBarrier::init(&smem.q_full, 1);
      cutlass::arch::ClusterBarrier::init(&smem.q_empty, Traits::kNumMmaWarpgroups);
      cutlass::arch::fence_barrier_init();
    }
    __syncthreads();

    typename Traits::PipelineKV pipeline_k{&smem.pipeline_k};
    typename Traits::PipelineKV pipeline_vraw{&smem.pipeline_vraw};
    typename Traits::PipelineVt pipeline_vt{&smem.pipeline_vt};
    FwdParams const& p = params.fwd;

    if (warpgroup_idx == 0) {
      cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegisters>();
      if (warp_idx == 0) {
        bool const is_leader = cute::elect_one_sync();
        MainloopFwdSm90Fp8Load<Traits> load;
        int count = 0;
        for (int t = params.walk.first(); t < params.order.num_tiles(); t = params.walk.producer_next(t, smem, count++)) {
          TileWork const w = tile_work(params, t);
          if (!w.has_rows || w.trips.empty()) { continue; }
          if (is_leader) { load.load_tile(params, smem, pipeline_k, pipeline_vraw, w.tile, w.seq, w.trips); }
          __syncwarp();
        }
        params.walk.producer_finish(smem, count);
      } else {
        Fp8VTransposer<Traits> transposer;
        int const lane = threadIdx.x % cutlass::NumThreadsPerWarp;
        int count = 0;
        for (int t = params.walk.first(); t < params.order.num_tiles(); t = params.walk.consumer_next(t, smem, count++)) {
          TileWork const w = tile_work(params, t);
          if (!w.has_rows || w.trips.empty()) { continue; }
          for (int n_block = w.trips.n_end - 1; n_block >= w.trips.n_begin; --n_block) {
            transposer.transpose_block(smem, pipeline_vraw, pipeline_vt, warp_idx - 1, lane);
          }
        }
      }
    } else {
      cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegisters>();
      int const mma_thread_idx = threadIdx.x - cutlass::NumThreadsPerWarpGroup;
      MainloopFwdSm90Fp8Mma<Traits> mainloop;
      typename Traits::TiledMmaPV mma_pv;
      int const warpgroup = mma_thread_idx / cutlass::NumThreadsPerWarpGroup;
      if constexpr (Traits::kPingpong) {
        if (warpgroup == 1) { pingpong_pass_turn(warpgroup); }
      }
      int count = 0;
      for (int t = params.walk.first(); t < params.order.num_tiles(); t = params.walk.consumer_next(t, smem, count++)) {
        TileWork const w = tile_work(params, t);
        if (!w.has_rows) { continue; }
        Tensor tOrO = partition_fragment_C(mma_pv, Shape<typename Traits::BlockM, typename Traits::HeadDimV>{});
        clear(tOrO);
        Fp8OnlineSoftmax<2> softmax;
        float v_scale = 1.f;
        if (!w.trips.empty()) {
          mainloop.compute_tile(params, smem, pipeline_k, pipeline_vt, mma_thread_idx, w.tile, w.mask, w.trips, tOrO,
                                softmax, &v_scale);
        }
        EpilogueFwdSm90Fp8<Traits>::store(params, smem, mma_thread_idx, w.tile, w.seq, tOrO, softmax, v_scale);
      }
      finish_o_stores<Traits>(mma_thread_idx);  // the last TMA store has read its slot
      if constexpr (Traits::kPingpong) {
        if (warpgroup == 0) { pingpong_wait_turn(warpgroup); }
      }
    }
  }
};

template <class Kernel>
__global__ void __launch_bounds__(Kernel::Traits::kNumThreads, 1)
    fp8_fwd_kernel_sm90(CUTE_GRID_CONSTANT typename Kernel::Params const params) {
  extern __shared__ char smem[];
  Kernel{}(params, smem);
}

}  // namespace flash3
