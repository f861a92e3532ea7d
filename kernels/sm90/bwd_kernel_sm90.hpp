// The sm90 (Hopper) backward kernel: warp-specialised, one CTA per (key block, kv head, batch).
//
//   warpgroup 0        producer: setmaxnreg down; warp 0: one thread issues all loads (MainloopBwdSm90Load);
//                      warp 1: adds each step's dQ into the fp32 accumulator (DqWriterBwdSm90; d <= 128); in
//                      deterministic mode warps 1 and 2 take alternate steps (d <= 128), or warp 1 waits for the
//                      consumers' turns and passes them on (DqTurnKeeperBwdSm90, head-dim split)
//   warpgroups 1..2    consumers: setmaxnreg up, the five GEMMs per query block (MainloopBwdSm90Mma for d <= 128,
//                      MainloopBwdSm90MmaSplitD above), then dK/dV
//
// Every role derives the same CtaWork (query heads of the group, query blocks that see the key block and the order
// in which it visits them, kernels/common/bwd_query_order.hpp), so the Q/dO pipelines stay in step without other
// communication. The pre- and postprocess kernels (bwd_prepost.cuh) run before
// (D = rowsum(dO * O), lse_log2, zeroed dQ accumulator) and after (dQ = accumulator * scale, in the input dtype).
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/cutlass.h>

#include "kernels/common/bwd_params.hpp"
#include "kernels/common/bwd_query_order.hpp"
#include "kernels/common/mask.hpp"
#include "kernels/common/seqlen_info.hpp"
#include "kernels/sm90/bwd_kernel_traits_sm90.hpp"
#include "kernels/sm90/collective/dq_writer_bwd_sm90.hpp"
#include "kernels/sm90/collective/epilogue_bwd_sm90.hpp"
#include "kernels/sm90/collective/mainloop_bwd_sm90_load.hpp"
#include "kernels/sm90/collective/mainloop_bwd_sm90_mma.hpp"
#include "kernels/sm90/collective/mainloop_bwd_sm90_mma_splitd.hpp"

namespace flash3 {

template <class Traits_>
struct BwdKernelSm90 {
  using Traits = Traits_;
  using Mask = BlockMask<Traits::kBlockM, Traits::kBlockN, Traits::kHasLocal>;
  using Order = BwdQueryOrder<Traits::kBlockM, Traits::kBlockN, Traits::kHasLocal>;
  using Mainloop = cute::conditional_t<Traits::kSplitHeadDim, MainloopBwdSm90MmaSplitD<Traits>,
                                       MainloopBwdSm90Mma<Traits>>;
  // The key-split tiling hands dQ to a writer warp; the head-dim split adds it from the consumers (no smem left).
  static constexpr bool kHasDqWriter = !Traits::kSplitHeadDim;

  struct Params {
    BwdParams bwd;
    int resident_ctas;  // CTAs of this kernel the device runs at once (deterministic mode: see BwdQueryOrder)
    typename Traits::ShapeQKV shape_q, shape_do, shape_k, shape_v;
    typename Traits::TmaQ tma_q;
    typename Traits::TmadO tma_do;
    typename Traits::TmaK tma_k;
    typename Traits::TmaV tma_v;
    typename Traits::ShapeStat shape_stat;  // (scratch rows, batch x heads or heads)
    typename Traits::TmaStat tma_lse, tma_dpsum;
  };

  struct CtaWork {
    int n_block, head_k, batch;
    int group;             // query heads per kv head
    SeqlenInfo seq;        // used lengths and row offsets
    int allocated_k;       // rows of this sequence in k/dk (>= seq.seqlen_k): dK/dV rows written
    Mask mask;
    Order order;           // the query blocks that see this key block, in visiting order (order.m_at(step))
    CUTLASS_DEVICE bool has_steps() const { return order.num_steps > 0; }
  };

  CUTLASS_DEVICE static CtaWork cta_work(Params const& params) {
    BwdParams const& p = params.bwd;
    int const batch = blockIdx.z;
    SeqlenInfo const seq(p, batch);
    Mask const mask(seq.seqlen_q, seq.seqlen_k, p.window_left, p.window_right);
    int const allocated_k =
        p.cu_seqlens_k != nullptr ? int(p.cu_seqlens_k[batch + 1] - p.cu_seqlens_k[batch]) : p.seqlen_k;
    // Deterministic mode launches the key blocks from the last down (see BwdQueryOrder).
    int const n_block =
        p.deterministic ? Order::key_block_at(int(blockIdx.x), int(gridDim.x)) : int(blockIdx.x);
    return CtaWork{n_block, int(blockIdx.y), batch, p.num_heads / p.num_heads_k, seq, allocated_k, mask,
                   Order(mask, n_block, p.deterministic, params.resident_ctas)};
  }

  CUTLASS_DEVICE void operator()(Params const& params, char* smem_raw) const {
    using namespace cute;
    auto& smem = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);
    CtaWork const work = cta_work(params);
    if (work.n_block * Traits::kBlockN >= work.allocated_k) { return; }  // past this sequence: nothing to write

    int const warp_idx = cutlass::canonical_warp_idx_sync();
    int const warpgroup_idx = cutlass::canonical_warp_group_idx();
    if (warp_idx == 0 && cute::elect_one_sync()) {
      cute::prefetch_tma_descriptor(params.tma_q.get_tma_descriptor());
      cute::prefetch_tma_descriptor(params.tma_do.get_tma_descriptor());
      cute::prefetch_tma_descriptor(params.tma_k.get_tma_descriptor());
      cute::prefetch_tma_descriptor(params.tma_v.get_tma_descriptor());
      cute::prefetch_tma_descriptor(params.tma_lse.get_tma_descriptor());
      cute::prefetch_tma_descriptor(params.tma_dpsum.get_tma_descriptor());
      Traits::PipelineQ::init(&smem.pipeline_q, Traits::kNumMmaWarpgroups);
      Traits::PipelineQ::init(&smem.pipeline_do, Traits::kNumMmaWarpgroups);
      cutlass::arch::ClusterTransactionBarrier::init(&smem.kv_full, 1);
      cutlass::arch::fence_barrier_init();
    }
    __syncthreads();
    typename Traits::PipelineQ pipeline_q{&smem.pipeline_q};
    typename Traits::PipelineQ pipeline_do{&smem.pipeline_do};

    if (warpgroup_idx == 0) {
      cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegisters>();
      if (warp_idx == 0 && work.has_steps() && cute::elect_one_sync()) {
        MainloopBwdSm90Load<Traits>::load_cta(params, smem, pipeline_q, pipeline_do, work);
      }
      if constexpr (kHasDqWriter) {
        int const num_writers = params.bwd.deterministic ? 2 : 1;
        if (warp_idx >= 1 && warp_idx <= num_writers && work.has_steps()) {
          DqWriterBwdSm90<Traits>::run(params.bwd, smem, work, warp_idx - 1, num_writers);
        }
      } else {
        if (warp_idx == 1 && params.bwd.deterministic && work.has_steps()) {
          DqTurnKeeperBwdSm90<Traits>::run(params.bwd, work);
        }
      }
    } else {
      cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegisters>();
      int const mma_thread_idx = threadIdx.x - cutlass::NumThreadsPerWarpGroup;
      typename Traits::TiledMmadK mma_dk;
      typename Traits::TiledMmadV mma_dv;
      Tensor tdKrdK = partition_fragment_C(mma_dk, Shape<typename Traits::BlockN, typename Traits::HeadDim>{});
      Tensor tdVrdV = partition_fragment_C(mma_dv, Shape<typename Traits::BlockN, typename Traits::HeadDimV>{});
      clear(tdKrdK);
      clear(tdVrdV);
      if (work.has_steps()) {
        Mainloop::compute_cta(params, smem, pipeline_q, pipeline_do, mma_thread_idx, work, tdKrdK, tdVrdV);
      }
      EpilogueBwdSm90<Traits>::store(params.bwd, mma_thread_idx, work, tdKrdK, tdVrdV);
    }
  }
};

template <class Kernel>
__global__ void __launch_bounds__(Kernel::Traits::kNumThreads, 1)
    bwd_kernel_sm90(CUTE_GRID_CONSTANT typename Kernel::Params const params) {
  extern __shared__ char smem[];
  Kernel{}(params, smem);
}

}  // namespace flash3
