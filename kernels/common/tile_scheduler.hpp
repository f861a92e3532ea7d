// Persistent tile schedulers: grid = min(#tiles, #SMs) CTAs that walk a sequence of tile indices.
//
// Tile order (HeadMajorTileOrder): (batch, head) outermost, query block innermost, last query block first. CTAs
// running at the same time then share a few heads' K/V, loaded from HBM once by neighbouring CTAs. (Query block
// outermost made 1k-token runs HBM-bound: 132 concurrent CTAs streamed 132 heads' K/V, 66 MB per wave > 50 MB L2;
// see docs/perf-notes.md.)
//
// Walk: without a mask every tile costs the same, so CTA c takes c, c + gridDim.x, ... (StaticTileWalk). Under a
// causal or local mask tile costs differ up to #query blocks-fold, and a static walk gave CTA c the blocks ~(127 - c)
// of every head at 16k (132 SMs ~ 128 query blocks): a 3x spread of work. There each CTA takes the next index from
// a global atomic counter when it finishes a tile (DynamicTileWalk): longest first, whoever is free next.
#pragma once

#include <cute/arch/util.hpp>
#include <cutlass/cutlass.h>

#include "kernels/common/named_barriers.hpp"

#ifndef FLASH3_FWD_EXP
#define FLASH3_FWD_EXP 0
#endif

namespace flash3 {

struct TileCoord {
  int m_block;
  int head;
  int batch;
};

struct HeadMajorTileOrder {
  int num_m_blocks;
  int num_heads;
  int num_batch;

  CUTLASS_HOST_DEVICE int num_tiles() const { return num_m_blocks * num_heads * num_batch; }

  CUTLASS_HOST_DEVICE TileCoord coord(int tile) const {
    int const bh = tile / num_m_blocks;
    int const m_block = num_m_blocks - 1 - (tile - bh * num_m_blocks);
    return {m_block, bh % num_heads, bh / num_heads};
  }
};

// The dynamic walk's hand-over state in shared memory (DynamicTileWalk below).
struct TileHandOver {
  int next_tile[2];
  uint64_t full[2];
  uint64_t empty[2];
};

struct StaticTileWalk {
  CUTLASS_DEVICE static void init(TileHandOver*) {}
  CUTLASS_DEVICE int first() const { return blockIdx.x; }
  template <class Storage>
  CUTLASS_DEVICE int producer_next(int tile, Storage&, int) const { return tile + gridDim.x; }
  template <class Storage>
  CUTLASS_DEVICE void producer_finish(Storage&, int) const {}
  template <class Storage>
  CUTLASS_DEVICE int consumer_next(int tile, Storage&, int) const { return tile + gridDim.x; }
};

// The producer warp draws the next index (one atomic per tile) and hands it to the consumers (TileHandOverMode):
//  - kNamedBarrier: one slot and two named barriers: kTileReady1 (producer arrives after writing, consumers wait) and
//    kTileConsumed1 (consumers arrive after reading, the producer waits before the next write). Every consumer thread
//    syncs with the producer warp on every tile, so the two pingpong warpgroups, half a trip apart, meet there.
//  - kNamedBarrierPerWarpgroup: the same with one pair of named barriers per consumer warpgroup (the producer warp
//    arrives on / waits for each): each warpgroup meets only the producer.
//  - kMbarrier: a ring of two slots, each guarded by two mbarriers (TileHandOver): `full` (the producer arrives after
//    writing; every consumer thread waits) and `empty` (one arrival per consumer warp after its lanes read; the
//    producer waits before the slot's next write).
// Measured (perf-notes forward rows 37 and 40, causal, against kNamedBarrier): kMbarrier +2-3% at 1k-4k for hdim 64,
// but at hdim 128 it doubled the spills (32 -> 64 B) and lost 3-6% at 16k; kNamedBarrierPerWarpgroup keeps the
// spills and gives hdim 128 +3% at 512-1k, +1.5% at 2k, hdim 256 +1-2% at 512-2k. The FP8 kernels (whose consumers
// include the V transposer warps) use kMbarrier: speed within noise of kNamedBarrier (perf-notes FP8 row F15), and
// their shared named pair was reached by bar.sync from two loops (consumers, transposers), which compute-sanitizer's
// synccheck cannot model (docs/kernels.md, sanitizers). FLASH3_FWD_EXP & 8388608: kNamedBarrier everywhere (A/B).
//
// When the grid covers every tile (one tile per CTA) there is nothing to balance: the launcher then passes a null
// counter, and the walk ends after the first tile with no atomic and no zeroing memset before the launch (a memset
// is a stream operation costing microseconds of host time on every small call).
enum class TileHandOverMode { kNamedBarrier, kNamedBarrierPerWarpgroup, kMbarrier };

template <int kNumConsumerThreads, TileHandOverMode kMode_ = TileHandOverMode::kNamedBarrier>
struct DynamicTileWalk {
  int* counter;  // zeroed before the launch; null when gridDim.x covers every tile

  static constexpr TileHandOverMode kMode = (FLASH3_FWD_EXP & 8388608) != 0 ? TileHandOverMode::kNamedBarrier : kMode_;
  static constexpr bool kNamedBarriers = kMode != TileHandOverMode::kMbarrier;
  // Named barriers: the consumers form kGroups groups (one, or one per warpgroup), each with its own ready / consumed
  // pair shared with the producer warp.
  static constexpr bool kPerWarpgroup = kMode == TileHandOverMode::kNamedBarrierPerWarpgroup;
  static constexpr int kGroups = kPerWarpgroup ? kNumConsumerThreads / cutlass::NumThreadsPerWarpGroup : 1;
  static constexpr int kGroupThreads = kNumConsumerThreads / kGroups;
  static_assert(kGroups * kGroupThreads == kNumConsumerThreads && kGroups <= 2);  // named_barriers.hpp: 4 ids
  static constexpr uint32_t kBarrierThreads = kGroupThreads + cutlass::NumThreadsPerWarp;
  static constexpr uint32_t kConsumerWarps = kNumConsumerThreads / cutlass::NumThreadsPerWarp;
  CUTLASS_DEVICE static FwdNamedBarrier ready_barrier(int group) {
    return static_cast<FwdNamedBarrier>(int(FwdNamedBarrier::kTileReady1) - group);
  }
  CUTLASS_DEVICE static FwdNamedBarrier consumed_barrier(int group) {
    return static_cast<FwdNamedBarrier>(int(FwdNamedBarrier::kTileConsumed1) - group);
  }
  // The producer waits until every group read the previous index.
  CUTLASS_DEVICE static void wait_consumed() {
    for (int g = 0; g < kGroups; ++g) { named_barrier_sync(kBarrierThreads, consumed_barrier(g)); }
  }

  // One thread, before the CTA's first barrier sync (with the kernel's other mbarrier inits).
  CUTLASS_DEVICE static void init(TileHandOver* h) {
    if constexpr (kNamedBarriers) { return; }
    for (int i = 0; i < 2; ++i) {
      cutlass::arch::ClusterBarrier::init(&h->full[i], 1);
      cutlass::arch::ClusterBarrier::init(&h->empty[i], kConsumerWarps);
    }
  }

  CUTLASS_DEVICE int first() const { return blockIdx.x; }

  // Called by the whole producer warp; `count` is how many indices this CTA has drawn so far.
  template <class Storage>
  CUTLASS_DEVICE int producer_next(int, Storage& smem, int count) const {
    int next = 0;
    // Without a counter gridDim.x == #tiles, so gridDim.x itself ends the walk.
    if (cute::elect_one_sync()) { next = (counter != nullptr ? atomicAdd(counter, 1) : 0) + int(gridDim.x); }
    next = __shfl_sync(0xffffffff, next, 0);
    TileHandOver& h = smem.tile_handover;
    if constexpr (kNamedBarriers) {
      if (count > 0) { wait_consumed(); }
      if (cute::elect_one_sync()) { h.next_tile[0] = next; }
      for (int g = 0; g < kGroups; ++g) { named_barrier_arrive(kBarrierThreads, ready_barrier(g)); }
    } else {
      int const slot = count & 1;
      if (cute::elect_one_sync()) {
        // The slot's previous index (hand-over count - 2) was read by every consumer warp (the first pass through
        // each slot waits on the phase before the first, which reads as complete).
        cutlass::arch::ClusterBarrier::wait(&h.empty[slot], ((count >> 1) & 1) ^ 1);
        h.next_tile[slot] = next;
        cutlass::arch::ClusterBarrier::arrive(&h.full[slot]);  // release: the write is visible to the waiters
      }
      __syncwarp();
    }
    return next;
  }
  template <class Storage>
  CUTLASS_DEVICE void producer_finish(Storage&, int count) const {
    // The named barriers must be left balanced (the consumers' last arrival); unconsumed mbarrier phases need nothing.
    if constexpr (kNamedBarriers) {
      if (count > 0) { wait_consumed(); }
    }
  }
  // Called by every consumer thread, with its own count of indices read.
  template <class Storage>
  CUTLASS_DEVICE int consumer_next(int, Storage& smem, int count) const {
    TileHandOver& h = smem.tile_handover;
    if constexpr (kNamedBarriers) {
      // Consumer threads follow the producer warpgroup: warpgroup 1 of the CTA is consumer warpgroup 0.
      int const group = kPerWarpgroup ? int(threadIdx.x / cutlass::NumThreadsPerWarpGroup) - 1 : 0;
      named_barrier_sync(kBarrierThreads, ready_barrier(group));
      int const next = h.next_tile[0];
      named_barrier_arrive(kBarrierThreads, consumed_barrier(group));
      return next;
    } else {
      int const slot = count & 1;
      cutlass::arch::ClusterBarrier::wait(&h.full[slot], (count >> 1) & 1);  // acquire
      int const next = h.next_tile[slot];
      __syncwarp();
      if (cute::elect_one_sync()) { cutlass::arch::ClusterBarrier::arrive(&h.empty[slot]); }
      return next;
    }
  }
};

}  // namespace flash3
