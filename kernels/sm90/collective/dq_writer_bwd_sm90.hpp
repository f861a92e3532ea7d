// The dQ writer of the sm90 backward: warp 1 of the producer warpgroup. Per step it takes the dQ tile the consumers
// left in shared memory and adds it into the fp32 accumulator in global memory with one bulk reduce-add
// (cp.reduce.async.bulk ... .add.f32), so the consumers never wait on global atomics: they go on with the next
// step's GEMMs as soon as the bulk copy has read the buffer.
//
// Deterministic mode: the dQ of a query block is summed over key blocks in the fixed order of BwdQueryOrder
// (kernels/common/bwd_query_order.hpp, which also argues why every wait ends), one CTA at a time. The writer waits
// until `ticket` key blocks have added theirs, adds, lets the consumers reuse the buffer as soon as the reduction has
// read it, waits for its addition to complete, then passes the turn on. That chain (poll, reduce, complete, fence,
// signal) takes about as long as a step at d = 64, so two writer warps take alternate steps; each computes its
// next ticket while the consumers are still on the step's GEMMs.
#pragma once

#include <cute/tensor.hpp>

#include "kernels/common/bwd_params.hpp"
#include "kernels/common/named_barriers.hpp"
#include "kernels/sm90/bwd_kernel_traits_sm90.hpp"

namespace flash3 {

CUTLASS_DEVICE void bulk_reduce_add_f32(float* gmem, float const* smem, uint32_t bytes) {
  uint32_t const smem_addr = cute::cast_smem_ptr_to_uint(smem);
  asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;"
               :
               : "l"(gmem), "r"(smem_addr), "r"(bytes)
               : "memory");
  asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}
// Adds 4 floats into global memory without fetching the old value back (red, not atom: CUDA's float4 atomicAdd
// compiled to ATOMG, whose returned data doubled the dQ traffic through an L2 that ncu had at 95% of its
// throughput in the head-dim split backward; perf-notes B9). 16-byte aligned.
CUTLASS_DEVICE void red_add_f32x4(float4* gmem, float a, float b, float c, float d) {
  asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" : : "l"(gmem), "f"(a), "f"(b), "f"(c), "f"(d)
               : "memory");
}
CUTLASS_DEVICE void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory"); }
CUTLASS_DEVICE void bulk_wait_complete() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }

// Deterministic mode: one thread waits until `ticket` key blocks have added into the block.
CUTLASS_DEVICE void wait_dq_turn_single(int32_t const* semaphore, int ticket) {
  int32_t seen;
  do {
    asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(seen) : "l"(semaphore) : "memory");
  } while (seen != ticket);
}

// The dQ buffer hand-over barriers of writer `slot` (0, or 1 for the second writer of the deterministic mode).
CUTLASS_DEVICE BwdNamedBarrier dq_full_barrier(int slot) {
  return slot == 0 ? BwdNamedBarrier::kDqFull : BwdNamedBarrier::kDqFull1;
}
CUTLASS_DEVICE BwdNamedBarrier dq_empty_barrier(int slot) {
  return slot == 0 ? BwdNamedBarrier::kDqEmpty : BwdNamedBarrier::kDqEmpty1;
}

template <class Traits>
struct DqWriterBwdSm90 {
  static constexpr int kBarrierThreads = Traits::kNumMmaThreads + Traits::kDqWriterThreads;

  // Writer `slot` of `num_slots` (1, or 2 in deterministic mode) takes the steps step % num_slots == slot. The
  // consumers write step s's dQ after writer (s - 1) % num_slots has read step s - 1's (its empty barrier) and hand
  // it to writer s % num_slots (its full barrier); a barrier id's phases never overlap because every hand-over waits
  // for the previous one.
  template <class Work>
  CUTLASS_DEVICE static void run(BwdParams const& p, typename Traits::SharedStorage& smem, Work const& work, int slot,
                                 int num_slots) {
    bool const is_leader = cute::elect_one_sync();
    int const len = work.order.num_steps;
    int const steps = work.group * len;
    // The buffer starts empty: the consumers' first wait is on the barrier of the writer of step -1.
    if (slot == num_slots - 1) { named_barrier_arrive(kBarrierThreads, dq_empty_barrier(slot)); }
    for (int step = slot; step < steps; step += num_slots) {
      int const g = step / len;
      int const i = step - g * len;
      int const m_block = work.order.m_at(i);
      int const head = work.head_k * work.group + g;
      int64_t const scratch_row = bwd_scratch_row(p, work.batch, head);
      int32_t* semaphore = p.dq_semaphore + scratch_row / Traits::kBlockM + m_block;
      int const ticket = p.deterministic ? work.order.ticket_warp(i) : 0;  // while the consumers compute
      named_barrier_sync(kBarrierThreads, dq_full_barrier(slot));
      if (is_leader) {
        float* dst = p.dq_accum + (scratch_row + int64_t(m_block) * Traits::kBlockM) * Traits::kHeadDim;
        if (p.deterministic) { wait_dq_turn_single(semaphore, ticket); }
        bulk_reduce_add_f32(dst, smem.dq_acc_or_pt.data(), Traits::kDqBytes);
        bulk_wait_read();
      }
      __syncwarp();
      if (step + 1 < steps) { named_barrier_arrive(kBarrierThreads, dq_empty_barrier(slot)); }
      if (p.deterministic && is_leader) {
        bulk_wait_complete();
        __threadfence();
        atomicAdd(semaphore, 1);
      }
    }
    if (is_leader) { bulk_wait_complete(); }
  }
};

// Deterministic mode, head-dim split (the consumers add dQ themselves): warp 1 of the producer warpgroup computes
// each step's ticket and polls the semaphore ahead of the consumers, then arrives at kDqTurnGranted (the consumers
// sync there), leaving the consumers a barrier instead of a poll. It cannot arrive a phase ahead: its next arrival
// follows its sync at kDqTurn, which completes only once every consumer has passed kDqTurnGranted. (An arrive, not a
// sync: compute-sanitizer's synccheck reports a named barrier whose phase is synced from two instructions, here the
// consumers' and the keeper's, as "divergent threads in block"; docs/kernels.md, sanitizers.) It also passes
// the turn on: the consumers arrive at kDqTurn once their reductions are issued and go on; the keeper syncs there,
// fences and increments the semaphore. The fence is cumulative (PTX memory model: the consumers' reductions precede
// it through the barrier), so it orders every consumer's additions before the increment while only the keeper
// waits for them to drain, and the successor gets the turn in this step instead of after the next step's softmax.
template <class Traits>
struct DqTurnKeeperBwdSm90 {
  static constexpr int kBarrierThreads = Traits::kNumMmaThreads + cutlass::NumThreadsPerWarp;

  template <class Work>
  CUTLASS_DEVICE static void run(BwdParams const& p, Work const& work) {
    bool const is_leader = cute::elect_one_sync();
    for (int g = 0; g < work.group; ++g) {
      int64_t const scratch_row = bwd_scratch_row(p, work.batch, work.head_k * work.group + g);
      for (int i = 0; i < work.order.num_steps; ++i) {
        int const ticket = work.order.ticket_warp(i);
        int32_t* semaphore = p.dq_semaphore + scratch_row / Traits::kBlockM + work.order.m_at(i);
        if (is_leader) { wait_dq_turn_single(semaphore, ticket); }
        __syncwarp();
        named_barrier_arrive(kBarrierThreads, BwdNamedBarrier::kDqTurnGranted);
        named_barrier_sync(kBarrierThreads, BwdNamedBarrier::kDqTurn);
        if (is_leader) {
          asm volatile("fence.acq_rel.gpu;" ::: "memory");
          atomicAdd(semaphore, 1);
        }
        __syncwarp();
      }
    }
  }
};

}  // namespace flash3
