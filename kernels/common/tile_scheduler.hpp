// Persistent tile scheduler: grid = min(#tiles, #SMs) CTAs, each walking tiles idx, idx + gridDim.x, ...
//
// Tile order: query block outermost, (batch, head) innermost. CTAs that run at the same time then work on
// neighbouring heads at the same query block, so each head's K and V are streamed by several CTAs close together
// in time and stay in L2. With a mask that shortens early query blocks (causal), the query blocks run from the last
// (longest) to the first, so the short tiles fill the tail of the schedule.
#pragma once

#include <cutlass/cutlass.h>

namespace flash3 {

struct TileCoord {
  int m_block;
  int head;
  int batch;
};

template <bool kLongestFirst>
struct StaticPersistentScheduler {
  int num_m_blocks;
  int num_heads;
  int num_batch;

  CUTLASS_HOST_DEVICE int num_tiles() const { return num_m_blocks * num_heads * num_batch; }

  CUTLASS_DEVICE TileCoord coord(int tile) const {
    int const bh = tile % (num_heads * num_batch);
    int m_block = tile / (num_heads * num_batch);
    if (kLongestFirst) { m_block = num_m_blocks - 1 - m_block; }
    return {m_block, bh % num_heads, bh / num_heads};
  }
};

}  // namespace flash3
