// Mask policy: which key blocks a query tile visits, which of them need per-element masking, and the masking itself.
//
// Key blocks are visited from high to low. Trips split into three runs so the steady-state run carries no mask
// code: [n_masked_hi, n_end) need the seqlen_k / causal / right-window mask, [n_masked_lo, n_masked_hi) need none,
// [n_begin, n_masked_lo) need the left-window mask. A query row i sees key j iff j < seqlen_k and
// j <= i + (seqlen_k - seqlen_q) + window_right (if window_right >= 0) and
// j >= i + (seqlen_k - seqlen_q) - window_left (if window_left >= 0).
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>

namespace flash3 {

CUTLASS_HOST_DEVICE int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
CUTLASS_HOST_DEVICE int ceil_div_signed(int a, int b) { return -floor_div(-a, b); }

template <int kBlockM, int kBlockN, bool kHasLocal>
struct BlockMask {
  int seqlen_q, seqlen_k;
  int window_left, window_right;  // -1: unbounded (always -1 when !kHasLocal)

  CUTLASS_HOST_DEVICE BlockMask(int sq, int sk, int wl, int wr)
      : seqlen_q(sq), seqlen_k(sk), window_left(kHasLocal ? wl : -1), window_right(kHasLocal ? wr : -1) {}

  struct Trips {
    int n_begin, n_masked_lo, n_masked_hi, n_end;  // n_begin <= n_masked_lo <= n_masked_hi <= n_end
    CUTLASS_HOST_DEVICE bool empty() const { return n_end <= n_begin; }
  };

  CUTLASS_HOST_DEVICE Trips trips(int m_block) const {
    int const shift = seqlen_k - seqlen_q;
    int const m_first = m_block * kBlockM;
    int const m_last = cute::min(m_first + kBlockM, seqlen_q) - 1;
    int const n_blocks_k = cute::ceil_div(seqlen_k, kBlockN);
    Trips t;
    t.n_end = n_blocks_k;
    t.n_masked_hi = seqlen_k / kBlockN;  // the partial last block needs the seqlen_k mask
    t.n_begin = 0;
    t.n_masked_lo = 0;
    if (window_right >= 0) {
      // The last row's last visible key bounds the blocks at all; the first row's bounds the unmasked ones.
      t.n_end = cute::min(t.n_end, cute::max(0, ceil_div_signed(m_last + shift + window_right + 1, kBlockN)));
      t.n_masked_hi = cute::min(t.n_masked_hi, cute::max(0, floor_div(m_first + shift + window_right + 1, kBlockN)));
    }
    if (window_left >= 0) {
      t.n_begin = cute::max(0, floor_div(m_first + shift - window_left, kBlockN));
      t.n_masked_lo = cute::max(0, ceil_div_signed(m_last + shift - window_left, kBlockN));
    }
    t.n_masked_hi = cute::max(cute::min(t.n_masked_hi, t.n_end), t.n_begin);
    t.n_masked_lo = cute::min(cute::max(t.n_masked_lo, t.n_begin), t.n_masked_hi);
    return t;
  }

  // Backward (keys stationary): the query blocks whose rows see at least one key of key block n_block, as
  // [*m_begin, *m_end); exactly the m with trips(m).n_begin <= n_block < trips(m).n_end (host-tested).
  CUTLASS_HOST_DEVICE void query_blocks(int n_block, int* m_begin, int* m_end) const {
    int const shift = seqlen_k - seqlen_q;
    int const n_first = n_block * kBlockN;
    int const n_last = cute::min(n_first + kBlockN, seqlen_k) - 1;
    int lo = 0, hi = cute::ceil_div(seqlen_q, kBlockM);
    if (n_last < n_first) { hi = 0; }
    // Row i sees key j only if j <= i + shift + window_right, i.e. i >= n_first - shift - window_right.
    if (window_right >= 0) { lo = cute::max(lo, floor_div(n_first - shift - window_right, kBlockM)); }
    // ... and only if j >= i + shift - window_left, i.e. i <= n_last - shift + window_left.
    if (window_left >= 0) { hi = cute::min(hi, floor_div(n_last - shift + window_left, kBlockM) + 1); }
    *m_begin = lo;
    *m_end = cute::max(lo, hi);
  }

  // Backward: whether tile (m_block, n_block) has invisible elements (key-range end, causal diagonal, window edge).
  CUTLASS_HOST_DEVICE bool tile_needs_mask(int m_block, int n_block) const {
    Trips const t = trips(m_block);
    return n_block >= t.n_masked_hi || n_block < t.n_masked_lo;
  }

  // Sets invisible scores to -inf in a transposed tile S^T (rows = keys, cols = queries); tScS_rowcol holds each
  // element's (key, query) inside the tile.
  template <class TensorS, class TensorC>
  CUTLASS_DEVICE void apply_transposed(TensorS& tSrS_rowcol, TensorC const& tScS_rowcol, int m_block,
                                       int n_block) const {
    using namespace cute;
    int const shift = seqlen_k - seqlen_q;
    CUTE_UNROLL
    for (int r = 0; r < size<0>(tSrS_rowcol); ++r) {
      int const key = n_block * kBlockN + int(get<0>(tScS_rowcol(r, 0)));
      CUTE_UNROLL
      for (int c = 0; c < size<1>(tSrS_rowcol); ++c) {
        int const row = m_block * kBlockM + int(get<1>(tScS_rowcol(r, c)));
        bool visible = key < seqlen_k;
        if (window_right >= 0) { visible = visible && key <= row + shift + window_right; }
        if (window_left >= 0) { visible = visible && key >= row + shift - window_left; }
        if (!visible) { tSrS_rowcol(r, c) = -INFINITY; }
      }
    }
  }

  // Sets invisible scores to -inf. tScS_rowcol holds each accumulator element's (row, col) inside the tile, in the
  // same (row, col) view as tSrS_rowcol.
  template <class TensorS, class TensorC>
  CUTLASS_DEVICE void apply(TensorS& tSrS_rowcol, TensorC const& tScS_rowcol, int m_block, int n_block) const {
    using namespace cute;
    int const shift = seqlen_k - seqlen_q;
    int const col_limit_k = seqlen_k - n_block * kBlockN;
    CUTE_UNROLL
    for (int r = 0; r < size<0>(tSrS_rowcol); ++r) {
      int const row = m_block * kBlockM + int(get<0>(tScS_rowcol(r, 0)));
      int col_hi = col_limit_k;  // exclusive, relative to the block's first column
      int col_lo = 0;            // inclusive
      if (window_right >= 0) { col_hi = min(col_hi, row + shift + window_right + 1 - n_block * kBlockN); }
      if (window_left >= 0) { col_lo = row + shift - window_left - n_block * kBlockN; }
      CUTE_UNROLL
      for (int c = 0; c < size<1>(tSrS_rowcol); ++c) {
        int const col = int(get<1>(tScS_rowcol(r, c)));
        if (col >= col_hi || col < col_lo) { tSrS_rowcol(r, c) = -INFINITY; }
      }
    }
  }
};

}  // namespace flash3
