// A multi-stage shared-memory pipeline filled by TMA and drained by consumer warpgroups.
//
// Each stage has a "full" mbarrier (one producer arrival plus the TMA's transaction bytes) and an "empty" mbarrier.
// Why our own and not cutlass::PipelineTmaAsync: with a single CTA that pipeline has every consumer *thread* arrive
// on the empty barrier; here one elected thread per consumer warpgroup arrives (after its warpgroup is done with the
// stage), which takes 128x fewer arrivals off the consumers' critical path (FA3 measured the difference).
#pragma once

#include <cute/arch/cluster_sm90.hpp>
#include <cutlass/arch/barrier.h>

namespace flash3 {

// Stage index and phase bit, advanced together.
template <int kStages>
struct PipelineState {
  int index = 0;
  uint32_t phase = 0;

  CUTLASS_DEVICE void advance() {
    if (++index == kStages) {
      index = 0;
      phase ^= 1;
    }
  }
};

template <int kStages>
struct TmaPipeline {
  using FullBarrier = cutlass::arch::ClusterTransactionBarrier;
  using EmptyBarrier = cutlass::arch::ClusterBarrier;

  struct SharedStorage {
    FullBarrier::ValueType full[kStages];
    EmptyBarrier::ValueType empty[kStages];
  };

  SharedStorage* storage;

  // Called by one thread before the first use (followed by a fence and a CTA-wide barrier).
  CUTLASS_DEVICE static void init(SharedStorage* s, int num_consumer_warpgroups) {
    for (int i = 0; i < kStages; ++i) {
      FullBarrier::init(&s->full[i], 1);
      EmptyBarrier::init(&s->empty[i], num_consumer_warpgroups);
    }
  }

  // Producer: wait until consumers released the stage, then announce the bytes the TMA will deliver.
  // The producer's first pass must not wait: its phase starts flipped (empty barriers begin "completed").
  CUTLASS_DEVICE void producer_acquire(PipelineState<kStages> const& st, uint32_t tx_bytes) const {
    EmptyBarrier::wait(&storage->empty[st.index], st.phase ^ 1);
    FullBarrier::arrive_and_expect_tx(&storage->full[st.index], tx_bytes);
  }
  CUTLASS_DEVICE uint64_t* full_barrier(PipelineState<kStages> const& st) const {
    return reinterpret_cast<uint64_t*>(&storage->full[st.index]);
  }

  // Consumer: wait for the TMA bytes of the stage.
  CUTLASS_DEVICE void consumer_wait(PipelineState<kStages> const& st) const {
    FullBarrier::wait(&storage->full[st.index], st.phase);
  }
  // The stage's empty barrier: waiting on it with st.phase returns once every consumer warpgroup released the use
  // `st` (provided the stage's next use has not been released too: the caller must hold the producer off it).
  CUTLASS_DEVICE uint64_t* empty_barrier(PipelineState<kStages> const& st) const {
    return reinterpret_cast<uint64_t*>(&storage->empty[st.index]);
  }
  // Consumer: one thread per warpgroup arrives once the whole warpgroup is done reading the stage.
  CUTLASS_DEVICE void consumer_release(PipelineState<kStages> const& st, bool is_warpgroup_leader) const {
    if (is_warpgroup_leader) { EmptyBarrier::arrive(&storage->empty[st.index]); }
  }
};

}  // namespace flash3
