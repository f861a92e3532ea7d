// Persistent tile scheduler: grid = min(#tiles, #SMs) CTAs, each walking tiles idx, idx + gridDim.x, ...
//
// Tile order: (batch, head) outermost, query block innermost. CTAs that run at the same time then work on the query
// blocks of the same few heads, so each head's K and V come from HBM once and are re-read from L2 by the others.
// (Query block outermost looks equivalent but is not: at seqlen 1k, 132 concurrent CTAs then stream 132 different
// heads' K/V, 66 MB per wave, more than the 50 MB L2, and the kernel becomes HBM-bound: measured 324 TFLOPS at hdim
// 128, see docs/perf-notes.md.) With a mask that shortens early query blocks (causal), each head's query blocks run
// from the last (longest) to the first.
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
    int const bh = tile / num_m_blocks;
    int m_block = tile - bh * num_m_blocks;
    if (kLongestFirst) { m_block = num_m_blocks - 1 - m_block; }
    return {m_block, bh % num_heads, bh / num_heads};
  }
};

}  // namespace flash3
