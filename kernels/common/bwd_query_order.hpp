// The order in which a backward CTA (one key block of one (batch, kv head)) visits its query blocks, and, in
// deterministic mode, the fixed order in which those CTAs add into each query block's fp32 dQ accumulator.
//
// Default mode: every CTA walks its query blocks [m_begin, m_end) upwards; dQ is added with unordered reductions.
//
// Deterministic mode: the additions into one query block's dQ must happen in an order that is a pure function of the
// problem, so each (query head, query block) has a semaphore and a key block waits for its ticket, its rank in that
// order, before adding. Ascending key-block order makes the CTAs of a head, which start together, a wavefront: CTA n
// waits for CTAs 0..n-1 at its first block and idles ~n steps. Instead:
//
//   visiting order   CTA n starts at its diagonal block d(n) = floor((n * kBlockN - (seqlen_k - seqlen_q)) / kBlockM)
//                    (the query block whose rows first see key n * kBlockN under bottom-right causal alignment), taken
//                    modulo its range, and walks cyclically: step s visits m_begin + (d(n) - m_begin + s) mod len.
//                    Without a mask, consecutive CTAs start kBlockN / kBlockM blocks apart, so at any step the CTAs of
//                    a head are on different query blocks; with causal or window masks d(n) is where the CTA's range
//                    starts anyway (ranges are already staggered there).
//   summation order  at query block m, the key blocks that visit m add ordered by (chunk(n), step_n(m), n), where
//                    step_n(m) = (m - d(n)) mod len(n) is the step at which CTA n visits m and chunk(n) =
//                    n / chunk_width. Within a chunk this is the arrival order of CTAs that start together and run at
//                    the same pace, so a CTA rarely finds its predecessor behind it. The ticket of (n, m) is its rank
//                    among the visitors of m, [trips(m).n_begin, trips(m).n_end), which the mask decides exactly as
//                    the kernel's query_blocks does (host-tested).
//
// Determinism: the ticket depends only on (seqlen_q, seqlen_k, window, block sizes, chunk_width, n, m); chunk_width
// is the number of CTAs the device runs at once (SMs x CTAs per SM, from the launcher), fixed for a device and
// kernel, so runs on one device add in one order. (chunk_width only changes the order of heads with more key blocks
// than that.)
//
// No deadlock. Assumptions: CTAs are dispatched in linear block order (blockIdx.x = key block is the fastest grid
// dimension, so a chunk is chunk_width consecutive CTAs), and chunk_width CTAs fit on the device at once. Every wait
// of CTA n at its step s of query head g is on an addition with a smaller key (chunk, step, n) at the same (g, m),
// i.e. on a CTA of a lower chunk (launched earlier) or on an event of its own chunk with a smaller potential
// (g, step, n); a CTA's own events run in increasing (g, step). Let u be the first unfinished CTA in launch order:
// all CTAs before it are done, so the dispatcher eventually makes u .. u + chunk_width - 1 resident, which holds every
// unfinished CTA of u's chunk. Among that chunk's pending events, the one with the smallest (g, step, n) waits only
// on finished CTAs or on events with a smaller potential, which are done: it proceeds. By induction every CTA
// finishes. (The previous ascending order needed no residency; the staggered one needs chunks to be co-resident,
// hence chunk_width <= what fits.) The signal of an addition never waits on another CTA (the adder waits for its own
// reduction to complete, then releases), so no other edge enters the argument.
//
// Cost: the ticket counts the visitors of m in the CTA's chunk that come first. ticket_warp() does it with one warp
// (32 candidates per ballot: at most chunk_width / 32 iterations), off the consumers' path.
#pragma once

#include <cutlass/cutlass.h>

#include "kernels/common/mask.hpp"

namespace flash3 {

template <int kBlockM, int kBlockN, bool kHasLocal>
struct BwdQueryOrder {
  using Mask = BlockMask<kBlockM, kBlockN, kHasLocal>;

  Mask mask;
  int n_block;
  int m_begin;      // this CTA's query blocks: [m_begin, m_begin + num_steps)
  int num_steps;
  int first;        // offset in [0, num_steps) of the first query block visited (0 in the default mode)
  int chunk_begin;  // deterministic mode: this CTA's chunk of key blocks, [chunk_begin, chunk_end)
  int chunk_end;

  CUTLASS_HOST_DEVICE BwdQueryOrder(Mask const& mask_, int n_block_, bool deterministic, int chunk_width)
      : mask(mask_), n_block(n_block_) {
    int m_end = 0;
    mask.query_blocks(n_block, &m_begin, &m_end);
    num_steps = m_end - m_begin;
    first = deterministic && num_steps > 0 ? mod_pos(diagonal(n_block) - m_begin, num_steps) : 0;
    chunk_begin = deterministic ? n_block / chunk_width * chunk_width : 0;
    chunk_end = deterministic ? chunk_begin + chunk_width : 0;
  }

  // Query block visited at `step` (0 <= step < num_steps).
  CUTLASS_HOST_DEVICE int m_at(int step) const {
    int j = first + step;
    if (j >= num_steps) { j -= num_steps; }
    return m_begin + j;
  }

  CUTLASS_HOST_DEVICE static int mod_pos(int a, int b) {
    int const r = a % b;
    return r < 0 ? r + b : r;
  }
  CUTLASS_HOST_DEVICE int diagonal(int n) const {
    return floor_div(n * kBlockN - (mask.seqlen_k - mask.seqlen_q), kBlockM);
  }
  // Deterministic mode: the step at which key block n visits query block m (m must be one of n's query blocks).
  CUTLASS_HOST_DEVICE int visit_step(int n, int m) const {
    int b = 0, e = 0;
    mask.query_blocks(n, &b, &e);
    return mod_pos(m - diagonal(n), e - b);
  }
  // Whether key block n, a visitor of m in this CTA's chunk, adds into m before this CTA, which visits m at `step`.
  CUTLASS_HOST_DEVICE bool adds_before_in_chunk(int n, int m, int step) const {
    int const s = visit_step(n, m);
    return s < step || (s == step && n < n_block);
  }

  // Visitors of the block visited at `step` from lower chunks (all of which add first), and the range of its
  // visitors in this CTA's chunk.
  struct Visitors {
    int m, from_lower_chunks, lo, hi;
  };
  CUTLASS_HOST_DEVICE Visitors visitors(int step) const {
    int const m = m_at(step);
    auto const t = mask.trips(m);
    int const lower = (t.n_end < chunk_begin ? t.n_end : chunk_begin) - t.n_begin;
    return {m, lower > 0 ? lower : 0, t.n_begin > chunk_begin ? t.n_begin : chunk_begin,
            t.n_end < chunk_end ? t.n_end : chunk_end};
  }

  // Deterministic mode: the ticket of this CTA at the block it visits at `step`: how many key blocks add there
  // before it. One thread (host tests and reference).
  CUTLASS_HOST_DEVICE int ticket(int step) const {
    Visitors const v = visitors(step);
    int t = v.from_lower_chunks;
    for (int n = v.lo; n < v.hi; ++n) { t += adds_before_in_chunk(n, v.m, step) ? 1 : 0; }
    return t;
  }

#if defined(__CUDA_ARCH__)
  // The same, by a full warp: lane l tests candidates lo + l, lo + l + 32, ...; every lane gets the ticket.
  CUTLASS_DEVICE int ticket_warp(int step) const {
    Visitors const v = visitors(step);
    int const lane = int(threadIdx.x % 32);
    int t = v.from_lower_chunks;
    for (int base = v.lo; base < v.hi; base += 32) {  // warp-uniform bounds
      int const n = base + lane;
      t += __popc(__ballot_sync(0xffffffffu, n < v.hi && adds_before_in_chunk(n, v.m, step)));
    }
    return t;
  }
#endif
};

}  // namespace flash3
