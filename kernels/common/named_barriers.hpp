// Named-barrier ids used by the forward and backward kernels, and thin wrappers. Ids are offsets above CUTLASS's
// reserved ones (8), so they run from 0 to 7.
#pragma once

#include <cutlass/arch/barrier.h>

namespace flash3 {

enum class FwdNamedBarrier : uint32_t {
  // Pingpong: consumer warpgroup w waits on kWarpSchedulerWG1 + w before issuing its GEMMs; the other warpgroup
  // arrives there once it has issued its own, so the two warpgroups take turns on the tensor cores.
  kWarpSchedulerWG1 = 0,
  kWarpSchedulerWG2 = 1,
  // TMA-store epilogue: consumer warpgroup w's staging buffer is free (kOStagingWG1 + w) and then written.
  kOStagingWG1 = 2,  // .. 4 for three consumer warpgroups
  // Dynamic tile walk: hand-over of the next tile index from the producer warp to the consumers, one consumed /
  // ready pair per consumer group g (all consumers, or one per warpgroup): kTileConsumed1 - g, kTileReady1 - g.
  // Two groups take 4 for consumed: only kernels of two warpgroups (no third O staging barrier) have two groups.
  kTileConsumed1 = 5,  // .. 4
  kTileReady1 = 7,     // .. 6
};
// CUTLASS adds its reserved count (8) to these ids; the hardware has 16 named barriers, so ids stop at 7.
constexpr uint32_t kMaxNamedBarrierId = 16 - static_cast<uint32_t>(cutlass::arch::ReservedNamedBarriers::FirstUserBarrier) - 1;
static_assert(static_cast<uint32_t>(FwdNamedBarrier::kTileReady1) <= kMaxNamedBarrierId);

// Named-barrier ids of the backward kernels (a separate kernel, so the ids may overlap the forward's).
enum class BwdNamedBarrier : uint32_t {
  kDsReady = 0,  // both consumer warpgroups wrote their dS^T tile (dQ = dS K reads both halves)
  kDqFull = 1,   // the consumers wrote the step's dQ into shared memory (the dQ writer warp waits)
  kDqEmpty = 2,  // the dQ writer's bulk reduction has read that buffer (the consumers wait)
  kDqTurn = 3,   // deterministic, head-dim split: the consumers issued their additions (the turn-keeper passes on)
  // Deterministic, key split: a second dQ writer warp takes the odd steps, with its own pair of barriers.
  kDqFull1 = 4,
  kDqEmpty1 = 5,
  // Deterministic, head-dim split: the turn-keeper warp saw the step's ticket come up (the consumers wait).
  kDqTurnGranted = 6,
};
static_assert(static_cast<uint32_t>(BwdNamedBarrier::kDqTurnGranted) <= kMaxNamedBarrierId);

CUTLASS_DEVICE void named_barrier_sync(uint32_t num_threads, FwdNamedBarrier id) {
  cutlass::arch::NamedBarrier::sync(num_threads, static_cast<uint32_t>(id));
}
CUTLASS_DEVICE void named_barrier_arrive(uint32_t num_threads, FwdNamedBarrier id) {
  cutlass::arch::NamedBarrier::arrive(num_threads, static_cast<uint32_t>(id));
}
CUTLASS_DEVICE void named_barrier_sync(uint32_t num_threads, BwdNamedBarrier id) {
  cutlass::arch::NamedBarrier::sync(num_threads, static_cast<uint32_t>(id));
}
CUTLASS_DEVICE void named_barrier_arrive(uint32_t num_threads, BwdNamedBarrier id) {
  cutlass::arch::NamedBarrier::arrive(num_threads, static_cast<uint32_t>(id));
}

}  // namespace flash3
