// The dQ writer of the sm90 backward: warp 1 of the producer warpgroup. Per step it takes the dQ tile the consumers
// left in shared memory and adds it into the fp32 accumulator in global memory with one bulk reduce-add
// (cp.reduce.async.bulk ... .add.f32), so the consumers never wait on global atomics: they go on with the next
// step's GEMMs as soon as the bulk copy has read the buffer.
//
// Deterministic mode: the dQ of a query block is summed over key blocks in ascending order, one CTA at a time. The
// writer waits until `ticket` key blocks before its own have added theirs, adds, waits for its addition to complete,
// then passes the turn on. CTAs of lower key blocks have lower block indices and start earlier, so the wait ends.
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
CUTLASS_DEVICE void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory"); }
CUTLASS_DEVICE void bulk_wait_complete() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }

// Deterministic mode, for consumers that add dQ themselves (head-dim split tiling): one elected consumer thread
// waits for the turn, the named barrier releases the others; after the additions, a fence and the barrier, it
// passes the turn on.
CUTLASS_DEVICE void wait_dq_turn_single(int32_t const* semaphore, int ticket) {
  int32_t seen;
  do {
    asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(seen) : "l"(semaphore) : "memory");
  } while (seen != ticket);
}
CUTLASS_DEVICE void wait_dq_turn(int32_t const* semaphore, int ticket, bool is_leader, int num_threads) {
  if (is_leader) { wait_dq_turn_single(semaphore, ticket); }
  named_barrier_sync(num_threads, BwdNamedBarrier::kDqTurn);
}
CUTLASS_DEVICE void pass_dq_turn(int32_t* semaphore, bool is_leader, int num_threads) {
  __threadfence();  // every thread's dQ additions are performed before the turn moves on
  named_barrier_sync(num_threads, BwdNamedBarrier::kDqTurn);
  if (is_leader) { atomicAdd(semaphore, 1); }
}

template <class Traits>
struct DqWriterBwdSm90 {
  static constexpr int kBarrierThreads = Traits::kNumMmaThreads + Traits::kDqWriterThreads;

  template <class Work>
  CUTLASS_DEVICE static void run(BwdParams const& p, typename Traits::SharedStorage& smem, Work const& work) {
    bool const is_leader = cute::elect_one_sync();
    int const steps = work.group * (work.m_end - work.m_begin);
    named_barrier_arrive(kBarrierThreads, BwdNamedBarrier::kDqEmpty);  // the buffer starts empty
    int step = 0;
    for (int g = 0; g < work.group; ++g) {
      int const head = work.head_k * work.group + g;
      int64_t const scratch_row = bwd_scratch_row(p, work.batch, head);
      for (int m_block = work.m_begin; m_block < work.m_end; ++m_block) {
        named_barrier_sync(kBarrierThreads, BwdNamedBarrier::kDqFull);
        if (is_leader) {
          float* dst = p.dq_accum + (scratch_row + int64_t(m_block) * Traits::kBlockM) * Traits::kHeadDim;
          int32_t* semaphore = p.dq_semaphore + scratch_row / Traits::kBlockM + m_block;
          if (p.deterministic) { wait_dq_turn_single(semaphore, work.n_block - work.mask.trips(m_block).n_begin); }
          bulk_reduce_add_f32(dst, smem.dq_acc_or_pt.data(), Traits::kDqBytes);
          if (p.deterministic) {
            bulk_wait_complete();
            __threadfence();
            atomicAdd(semaphore, 1);
          } else {
            bulk_wait_read();
          }
        }
        __syncwarp();
        if (++step < steps) { named_barrier_arrive(kBarrierThreads, BwdNamedBarrier::kDqEmpty); }
      }
    }
    if (is_leader) { bulk_wait_complete(); }
  }
};

}  // namespace flash3
