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

struct StaticTileWalk {
  CUTLASS_DEVICE int first() const { return blockIdx.x; }
  template <class Storage>
  CUTLASS_DEVICE int producer_next(int tile, Storage&, int) const { return tile + gridDim.x; }
  template <class Storage>
  CUTLASS_DEVICE void producer_finish(Storage&, int) const {}
  template <class Storage>
  CUTLASS_DEVICE int consumer_next(int tile, Storage&, int) const { return tile + gridDim.x; }
};

// The producer warp draws the next index (one atomic per tile) and hands it to the consumer warpgroups through one
// shared-memory slot guarded by two named barriers: kTileReady (producer arrives after writing, consumers wait) and
// kTileConsumed (consumers arrive after reading, the producer waits before the next write). The second barrier is
// what keeps the producer from running more than one index ahead: tiles it skips (nothing to load) cost it no other
// wait. The producer's final wait (finish()) consumes the consumers' last arrival, so no barrier is left half-used.
//
// When the grid covers every tile (one tile per CTA) there is nothing to balance: the launcher then passes a null
// counter, and the walk ends after the first tile with no atomic and no zeroing memset before the launch (a memset
// is a stream operation costing microseconds of host time on every small call).
template <int kNumConsumerThreads>
struct DynamicTileWalk {
  int* counter;  // zeroed before the launch; null when gridDim.x covers every tile

  static constexpr uint32_t kBarrierThreads = kNumConsumerThreads + cutlass::NumThreadsPerWarp;

  CUTLASS_DEVICE int first() const { return blockIdx.x; }

  // Called by the whole producer warp; `count` is how many indices this CTA has drawn so far.
  template <class Storage>
  CUTLASS_DEVICE int producer_next(int, Storage& smem, int count) const {
    int next = 0;
    // Without a counter gridDim.x == #tiles, so gridDim.x itself ends the walk.
    if (cute::elect_one_sync()) { next = (counter != nullptr ? atomicAdd(counter, 1) : 0) + int(gridDim.x); }
    next = __shfl_sync(0xffffffff, next, 0);
    if (count > 0) { named_barrier_sync(kBarrierThreads, FwdNamedBarrier::kTileConsumed); }
    if (cute::elect_one_sync()) { smem.next_tile = next; }
    named_barrier_arrive(kBarrierThreads, FwdNamedBarrier::kTileReady);
    return next;
  }
  template <class Storage>
  CUTLASS_DEVICE void producer_finish(Storage&, int count) const {
    if (count > 0) { named_barrier_sync(kBarrierThreads, FwdNamedBarrier::kTileConsumed); }
  }
  template <class Storage>
  CUTLASS_DEVICE int consumer_next(int, Storage& smem, int) const {
    named_barrier_sync(kBarrierThreads, FwdNamedBarrier::kTileReady);
    int const next = smem.next_tile;
    named_barrier_arrive(kBarrierThreads, FwdNamedBarrier::kTileConsumed);
    return next;
  }
};

}  // namespace flash3
