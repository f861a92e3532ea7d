// The sm90 (Hopper) forward kernel: warp-specialised, persistent.
//
//   warpgroup 0        producer: setmaxnreg down, one thread issues all TMA loads (MainloopFwdSm90Load)
//   warpgroups 1..W    consumers: setmaxnreg up, WGMMA + online softmax (MainloopFwdSm90Mma), then the epilogue
//
// Both sides walk the same tile sequence (TileWalk over HeadMajorTileOrder) and the same key-block trips (BlockMask), so
// the pipelines stay in step without any other communication.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/cutlass.h>

#include "kernels/common/fwd_params.hpp"
#include "kernels/common/tile_scheduler.hpp"
#include "kernels/sm90/collective/epilogue_fwd_sm90.hpp"
#include "kernels/sm90/collective/mainloop_fwd_sm90_load.hpp"
#include "kernels/sm90/collective/mainloop_fwd_sm90_mma.hpp"
#include "kernels/sm90/fwd_kernel_traits_sm90.hpp"

namespace flash3 {

template <class Traits_>
struct FwdKernelSm90 {
  using Traits = Traits_;
  using TileOrder = HeadMajorTileOrder;
  // Masked tiles differ in cost: draw them dynamically (see tile_scheduler.hpp).
  using TileWalk = cute::conditional_t<Traits::kHasLocal,
                                       DynamicTileWalk<Traits::kNumMmaThreads, Traits::kTileHandOver>,
                                       StaticTileWalk>;
  using Mask = BlockMask<Traits::kBlockM, Traits::kBlockN, Traits::kHasLocal>;

  struct Params {
    FwdParams fwd;
    typename Traits::ShapeQKV shape_q, shape_k, shape_vt;
    typename Traits::TmaQ tma_q;
    typename Traits::TmaK tma_k;
    typename Traits::TmaV tma_v;
    typename Traits::OStaging::Params o_staging;  // the TMA-store epilogue (Traits::kTmaStoreO)
    TileOrder order;
    TileWalk walk;
  };

  enum class WarpRole { kProducer = 0, kConsumer = 1 };

  // What tile index t means: coordinates, sequence, key-block trips. Both warp roles derive it the same way, which
  // is what keeps their pipelines in step. has_rows: the query block starts inside the sequence (varlen tiles past a
  // short sequence's end have nothing to do at all).
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

  // The kRepair launch, per CTA (every thread): whether the fixed-offset launch before it asked for a repair. One
  // thread reads the flag (so the CTA agrees); the last CTA to read it clears it, after every CTA has read it.
  CUTLASS_DEVICE static bool repair_needed(FwdRepairState* repair) {
    uint32_t needed = 0;
    if (threadIdx.x == 0) {
      needed = *reinterpret_cast<volatile uint32_t*>(&repair->needed);
      if (needed != 0) {
        __threadfence();
        if (atomicAdd(&repair->ctas_seen, 1u) == gridDim.x - 1) { repair->needed = 0; }
      }
    }
    return __syncthreads_or(needed != 0) != 0;
  }

  CUTLASS_DEVICE void operator()(Params const& params, char* smem_raw) const {
    using namespace cute;
    auto& smem = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);
    int const warp_idx = cutlass::canonical_warp_idx_sync();
    int const warpgroup_idx = cutlass::canonical_warp_group_idx();
    WarpRole const role = warpgroup_idx == 0 ? WarpRole::kProducer : WarpRole::kConsumer;
    FwdParams const& p = params.fwd;
    if constexpr (Traits::kFixedOffsetSoftmax) {
      if (p.softmax_mode == int32_t(FwdSoftmaxMode::kRepair)) {
        if (!repair_needed(p.repair)) { return; }
      } else if (p.softmax_mode == int32_t(FwdSoftmaxMode::kFixedOffset) && blockIdx.x == 0 && threadIdx.x == 0) {
        // The repair launch that follows in stream order starts from these.
        p.repair->repair_tile_counter = 0;
        p.repair->ctas_seen = 0;
      }
    }

    if (warp_idx == 0 && cute::elect_one_sync()) {
      cute::prefetch_tma_descriptor(params.tma_q.get_tma_descriptor());
      cute::prefetch_tma_descriptor(params.tma_k.get_tma_descriptor());
      cute::prefetch_tma_descriptor(params.tma_v.get_tma_descriptor());
      Traits::PipelineKV::init(&smem.pipeline_k, Traits::kNumMmaWarpgroups);
      Traits::PipelineKV::init(&smem.pipeline_v, Traits::kNumMmaWarpgroups);
      Traits::PipelineQ::init(&smem.pipeline_q, Traits::kNumMmaWarpgroups);
      TileWalk::init(&smem.tile_handover);
      if constexpr (Traits::kOStagingInV) {
        cutlass::arch::ClusterBarrier::init(&smem.o_free, Traits::kNumMmaWarpgroups);
      }
      cutlass::arch::fence_barrier_init();
    }
    __syncthreads();

    typename Traits::PipelineKV pipeline_k{&smem.pipeline_k};
    typename Traits::PipelineKV pipeline_v{&smem.pipeline_v};

    if (role == WarpRole::kProducer) {
      cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegisters>();
      if (warp_idx == 0) {
        // The whole warp walks the tiles (the dynamic walk hands indices over on a warp-granular named barrier);
        // one elected thread issues the loads.
        bool const is_leader = cute::elect_one_sync();
        MainloopFwdSm90Load<Traits> load;
        int count = 0;
        for (int t = params.walk.first(); t < params.order.num_tiles(); t = params.walk.producer_next(t, smem, count++)) {
          TileWork const w = tile_work(params, t);
          if (!w.has_rows || w.trips.empty()) { continue; }
          if (is_leader) { load.load_tile(params, smem, pipeline_k, pipeline_v, w.tile, w.seq, w.trips); }
          __syncwarp();
        }
        params.walk.producer_finish(smem, count);
      }
    } else {
      cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegisters>();
      int const mma_thread_idx = threadIdx.x - cutlass::NumThreadsPerWarpGroup;
      MainloopFwdSm90Mma<Traits> mainloop;
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
        typename MainloopFwdSm90Mma<Traits>::Softmax softmax(
            p.softmax_scale_log2, p.softmax_mode == int32_t(FwdSoftmaxMode::kFixedOffset));
        // A tile that sees no key (empty sequence, or masked out entirely) still writes O = 0 and LSE = -inf.
        if (!w.trips.empty()) {
          mainloop.compute_tile(params, smem, pipeline_k, pipeline_v, mma_thread_idx, w.tile, w.mask, w.trips, tOrO,
                                softmax);
        } else {
          mainloop.release_o_staging(smem, mma_thread_idx % cutlass::NumThreadsPerWarpGroup == 0);
        }
        EpilogueFwdSm90<Traits>::store(params, mainloop.o_staging_slot(smem, pipeline_v, mma_thread_idx,
                                                                       !w.trips.empty()),
                                       mma_thread_idx, w.tile, w.seq, tOrO, softmax);
      }
      // The last TMA store must have read its staging buffer before the CTA's shared memory goes away.
      finish_o_stores<Traits>(mma_thread_idx);
      if constexpr (Traits::kPingpong) {
        if (warpgroup == 0) { pingpong_wait_turn(warpgroup); }
      }
    }
  }
};

template <class Kernel>
__global__ void __launch_bounds__(Kernel::Traits::kNumThreads, 1)
    fwd_kernel_sm90(CUTE_GRID_CONSTANT typename Kernel::Params const params) {
  extern __shared__ char smem[];
  Kernel{}(params, smem);
}

}  // namespace flash3
