// The order in which a backward CTA (one key block of one (batch, kv head)) visits its query blocks, and, in
// deterministic mode, the fixed order in which those CTAs add into each query block's fp32 dQ accumulator.
//
// Default mode: every CTA walks its query blocks [m_begin, m_end) upwards; dQ is added with unordered reductions.
//
// Deterministic mode: the additions into one query block's dQ happen in an order that is a pure function of the
// problem: each (query head, query block) has a semaphore and a key block waits for its ticket, its rank in that
// order, before adding. Ascending key-block order makes the CTAs of a head, which start together, a wavefront (CTA n
// waits for CTAs 0..n-1 at its first block and idles ~n steps); under a causal mask CTA n even idles until the CTAs
// below it reach its diagonal. Instead, with M query blocks and r = kBlockN / kBlockM:
//
//   diagonal   d(n) = floor((n kBlockN - (seqlen_k - seqlen_q)) / kBlockM) mod M = (r n + c0) mod M: the query block
//              whose rows first see key n kBlockN under bottom-right alignment (where a causal range starts).
//   slot       v(n, m) = (m - d(n)) mod M, key block n's slot at query block m.
//   walk       CTA n visits its range [b, e) cyclically from d(n) if b <= d(n) < e, else from b; either way v(n, m)
//              strictly increases along the walk. With no mask or a causal mask (any lengths) v(n, m) is exactly the
//              step at which CTA n visits m, so consecutive CTAs start r blocks apart and CTAs running in lockstep
//              are at different query blocks at every step (host-tested for seqlen_q = seqlen_k).
//   launch     the kernel launches a sequence's key blocks from the last down (blockIdx.x = N - 1 - n for the
//              grid's N): under a causal mask the CTAs that add first at every query block (higher n, shorter ranges)
//              then start first. Launched in ascending order, CTA n + 1 of a later wave starts when a slot frees,
//              about one step after CTA n (r steps: causal ranges differ by r blocks), and reaches each query block
//              just when CTA n does, so every CTA waits on the next and the waits chain; descending, CTA n + 1
//              starts r steps before CTA n and is 2r steps ahead of it at every block.
//   order      at query block m the key blocks that visit it add in increasing (chunk, v(n, m), launch rank), chunk =
//              launch rank / chunk_width, launch rank = N - 1 - n. Within a chunk that is the lockstep arrival order
//              (up to the wrap of windowed ranges), so a CTA rarely finds its predecessor behind it.
//   ticket     the rank of (n, m) among the visitors of m, [trips(m).n_begin, trips(m).n_end) (the mask decides them
//              exactly as the kernel's query_blocks() does, host-tested): the visitors from chunks launched earlier,
//              plus those of its own chunk that come first. v needs no mask, so a warp tests 32 candidates per ballot.
//
// Determinism: the ticket depends only on (seqlen_q, seqlen_k, window, block sizes, chunk_width, n, m). chunk_width
// is the number of CTAs the device runs at once (SMs x CTAs per SM, from the launcher), fixed for a device and kernel;
// it only changes the order for heads with more key blocks than that.
//
// No deadlock. Assumptions: CTAs are dispatched in linear block order (blockIdx.x is the fastest grid dimension, so
// a chunk is chunk_width consecutive CTAs), and chunk_width CTAs fit on the device at once. Potential of the
// addition of (n, query head g, m): (g, v(n, m), launch rank). A CTA adds in increasing potential (query heads in
// order, slots increasing along the walk), and every wait of (n, g, m) is on an addition at the same (g, m) that is
// either in a chunk launched earlier or in its chunk with a smaller potential. Let u be the first unfinished CTA
// in launch order: every CTA before it is done, so the dispatcher eventually makes u .. u + chunk_width - 1
// resident, which holds every unfinished CTA of u's chunk. Among that chunk's pending additions, the one of smallest
// potential waits only on finished CTAs or on additions of smaller potential, which are done: it proceeds, and by
// induction every CTA finishes. A CTA passes the turn on after its own reduction completes (the head-dim split in its
// next step, after P^T and dS^T), never after waiting on another CTA, so nothing else enters the argument. (The
// ascending order needed no residency; this one needs chunks to be co-resident, hence chunk_width <= what fits: a
// context limited to fewer SMs than the device reports, e.g. by MPS, could hang a head with more key blocks.)
#pragma once

#include <cutlass/cutlass.h>

#include "kernels/common/mask.hpp"

namespace flash3 {

template <int kBlockM, int kBlockN, bool kHasLocal>
struct BwdQueryOrder {
  using Mask = BlockMask<kBlockM, kBlockN, kHasLocal>;
  static_assert(kBlockN % kBlockM == 0, "the diagonal of key block n is then (kBlockN / kBlockM) n + const");

  Mask mask;
  int n_block;
  int m_begin;      // this CTA's query blocks: [m_begin, m_begin + num_steps)
  int num_steps;
  int first;        // offset in [0, num_steps) of the first query block visited (0 in the default mode)
  int chunk_begin;  // deterministic mode: this CTA's chunk of key blocks, [chunk_begin, chunk_end)
  int chunk_end;

  // Deterministic mode: the kernel launches key blocks from the last one down; launch rank = N - 1 - n.
  CUTLASS_HOST_DEVICE int num_key_blocks() const { return cute::ceil_div(mask.seqlen_k, kBlockN); }
  CUTLASS_HOST_DEVICE static int key_block_at(int launch_rank, int num_key_blocks_in_grid) {
    return num_key_blocks_in_grid - 1 - launch_rank;
  }

  CUTLASS_HOST_DEVICE BwdQueryOrder(Mask const& mask_, int n_block_, bool deterministic, int chunk_width)
      : mask(mask_), n_block(n_block_), first(0), chunk_begin(0), chunk_end(0) {
    int m_end = 0;
    mask.query_blocks(n_block, &m_begin, &m_end);
    num_steps = m_end - m_begin;
    if (deterministic && num_steps > 0) {
      // Start at the diagonal when the range holds it, else at the range's start: either way the slots of the
      // visited blocks then increase along the walk (what the progress argument needs). With chunks of one CTA
      // (FLASH3_DETERMINISTIC_CHUNK_CTAS=1: no co-residency assumed) every key block adds after all those launched
      // before it, whatever the walk; a staggered start would then make CTAs wait on blocks the earlier ones reach
      // last (measured 22x slower, full mask), so the walk stays ascending, the wavefront of the plain order.
      int const start = diagonal(n_block);
      first = chunk_width > 1 && start >= m_begin && start < m_end ? start - m_begin : 0;
      // Chunks of chunk_width consecutive launches: launch ranks [c w, (c + 1) w) are key blocks (N - (c + 1) w,
      // N - c w].
      int const rank = num_key_blocks() - 1 - n_block;
      chunk_end = num_key_blocks() - rank / chunk_width * chunk_width;
      chunk_begin = chunk_end - chunk_width > 0 ? chunk_end - chunk_width : 0;
    }
  }

  // Query block visited at `step` (0 <= step < num_steps).
  CUTLASS_HOST_DEVICE int m_at(int step) const {
    int j = first + step;
    if (j >= num_steps) { j -= num_steps; }
    return m_begin + j;
  }

  // The same walk without a step counter, for the producer warp's 24 registers: two ascending runs,
  // [m_begin + first, m_begin + num_steps) then [m_begin, m_begin + first).
  //   for (auto c = order.cursor(); order.valid(c); order.advance(c)) { ... c.m ... }
  struct Cursor {
    int m, stop;
  };
  CUTLASS_HOST_DEVICE Cursor cursor() const { return {m_begin + first, m_begin + num_steps}; }
  CUTLASS_HOST_DEVICE bool valid(Cursor const& c) const { return c.m != c.stop; }
  CUTLASS_HOST_DEVICE void advance(Cursor& c) const {
    int const start = m_begin + first;
    if (++c.m == c.stop && c.stop != start) {
      c.m = m_begin;
      c.stop = start;
    }
  }

  CUTLASS_HOST_DEVICE static int mod_pos(int a, int b) {
    int const r = a % b;
    return r < 0 ? r + b : r;
  }
  static constexpr int kRatio = kBlockN / kBlockM;
  // Deterministic mode. M query blocks; key block n's diagonal is floor((n kBlockN - shift) / kBlockM) =
  // kRatio n + c0 with c0 = floor(-shift / kBlockM), shift = seqlen_k - seqlen_q; its slot at query block m is
  // (m - diagonal) mod M.
  CUTLASS_HOST_DEVICE int num_query_blocks() const { return cute::ceil_div(mask.seqlen_q, kBlockM); }
  CUTLASS_HOST_DEVICE int diagonal_offset() const { return floor_div(mask.seqlen_q - mask.seqlen_k, kBlockM); }
  CUTLASS_HOST_DEVICE int diagonal(int n) const {
    return mod_pos(kRatio * n + diagonal_offset(), num_query_blocks());
  }
  CUTLASS_HOST_DEVICE int slot(int n, int m) const {
    return mod_pos(m - diagonal_offset() - kRatio * n, num_query_blocks());
  }

  // The block visited at `step`, how many of its visitors are in chunks launched earlier (they all add first), its
  // visitors in this CTA's chunk [lo, hi), and what the slot computation needs: m - c0, M and this CTA's slot.
  struct Visitors {
    int m, from_lower_chunks, lo, hi, m_minus_c0, num_m, slot;
  };
  CUTLASS_HOST_DEVICE Visitors visitors(int step) const {
    int const m = m_at(step);
    auto const t = mask.trips(m);
    int const lower = t.n_end - (t.n_begin > chunk_end ? t.n_begin : chunk_end);  // chunks launched earlier
    int const m_minus_c0 = m - diagonal_offset();
    int const num_m = num_query_blocks();
    return {m,
            lower > 0 ? lower : 0,
            t.n_begin > chunk_begin ? t.n_begin : chunk_begin,
            t.n_end < chunk_end ? t.n_end : chunk_end,
            m_minus_c0,
            num_m,
            mod_pos(m_minus_c0 - kRatio * n_block, num_m)};
  }
  // Whether key block n, a visitor of v.m in this CTA's chunk, adds there before this CTA (no mask needed). Equal
  // slots (more key blocks than query blocks) go in launch order.
  CUTLASS_HOST_DEVICE bool adds_before(int n, Visitors const& v) const {
    int const s = mod_pos(v.m_minus_c0 - kRatio * n, v.num_m);
    return s < v.slot || (s == v.slot && n > n_block);
  }

  // Deterministic mode: the ticket of this CTA at the block it visits at `step`: how many key blocks add there
  // before it. One thread (host tests).
  CUTLASS_HOST_DEVICE int ticket(int step) const {
    Visitors const v = visitors(step);
    int t = v.from_lower_chunks;
    for (int n = v.lo; n < v.hi; ++n) { t += adds_before(n, v) ? 1 : 0; }
    return t;
  }

#if defined(__CUDA_ARCH__)
  // The same, by a full warp: lane l tests candidates lo + l, lo + l + 32, ...; every lane gets the ticket.
  CUTLASS_DEVICE int ticket_warp(int step) const {
    Visitors const v = visitors(step);
    int const lane = int(threadIdx.x % 32);
    int t = v.from_lower_chunks;
#pragma unroll 1
    for (int base = v.lo; base < v.hi; base += 32) {  // warp-uniform bounds
      int const n = base + lane;
      t += __popc(__ballot_sync(0xffffffffu, n < v.hi && adds_before(n, v)));
    }
    return t;
  }
#endif
};

}  // namespace flash3
