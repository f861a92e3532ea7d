// Host tests (compiled by nvcc: the header holds device code too) of the backward's query-block order
// (kernels/common/bwd_query_order.hpp): which query blocks each key-block CTA visits and when, and in deterministic
// mode the ticket of each (key block, query block), i.e. the order of the dQ additions. A duplicate ticket or a gap
// hangs the kernel; a ticket that depends on anything but the problem breaks reproducibility; a cyclic wait deadlocks.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <tuple>
#include <vector>

#include "kernels/common/bwd_query_order.hpp"

namespace {

struct Problem {
  int sq, sk, wl, wr, chunk_width;
};

template <int kBlockM, int kBlockN>
using Order = flash3::BwdQueryOrder<kBlockM, kBlockN, true>;

template <int kBlockM, int kBlockN>
int num_key_blocks(Problem const& pr) {
  return (pr.sk + kBlockN - 1) / kBlockN;
}

template <int kBlockM, int kBlockN>
std::vector<Order<kBlockM, kBlockN>> orders(Problem const& pr, bool deterministic) {
  typename Order<kBlockM, kBlockN>::Mask const mask(pr.sq, pr.sk, pr.wl, pr.wr);
  std::vector<Order<kBlockM, kBlockN>> out;
  for (int n = 0; n < num_key_blocks<kBlockM, kBlockN>(pr); ++n) {
    out.emplace_back(mask, n, deterministic, pr.chunk_width);
  }
  return out;
}

// Every CTA visits each of its query blocks exactly once, and they are exactly the blocks whose trips include it;
// the default mode walks them upwards; in deterministic mode the slots increase along the walk, and equal the step
// without a mask or with a causal one.
template <int kBlockM, int kBlockN>
void check_visits(Problem const& pr) {
  int const num_m = (pr.sq + kBlockM - 1) / kBlockM;
  for (bool det : {false, true}) {
    auto const ords = orders<kBlockM, kBlockN>(pr, det);
    for (auto const& o : ords) {
      SCOPED_TRACE(::testing::Message() << "det=" << det << " n=" << o.n_block << " range [" << o.m_begin << ","
                                        << o.m_begin + o.num_steps << ") first=" << o.first);
      ASSERT_GE(o.num_steps, 0);
      ASSERT_TRUE(o.first >= 0 && (o.first < o.num_steps || o.num_steps == 0));
      std::vector<int> seen(num_m, 0);
      for (int s = 0; s < o.num_steps; ++s) {
        int const m = o.m_at(s);
        ASSERT_TRUE(m >= 0 && m < num_m) << "step " << s << " visits block " << m;
        ++seen[m];
        // The default mode, and chunks of one CTA, keep the ascending walk; larger chunks stagger it.
        bool const staggered = det && pr.chunk_width > 1;
        if (!staggered) { ASSERT_EQ(m, o.m_begin + s) << "the walk must be ascending here"; }
        if (staggered && s > 0) {
          ASSERT_GT(o.slot(o.n_block, m), o.slot(o.n_block, o.m_at(s - 1))) << "slots must increase along the walk";
        }
        // No window on the left and none or causal on the right: the slot is the step (lockstep arrival order).
        if (staggered && pr.wl < 0 && pr.wr <= 0) { ASSERT_EQ(o.slot(o.n_block, m), s); }
      }
      // The producer's cursor walks the same blocks in the same order.
      int step = 0;
      for (auto c = o.cursor(); o.valid(c); o.advance(c), ++step) {
        ASSERT_LT(step, o.num_steps) << "the cursor walks too far";
        ASSERT_EQ(c.m, o.m_at(step)) << "cursor and m_at disagree at step " << step;
      }
      ASSERT_EQ(step, o.num_steps);
      for (int m = 0; m < num_m; ++m) {
        auto const t = o.mask.trips(m);
        int const expected = (o.n_block >= t.n_begin && o.n_block < t.n_end) ? 1 : 0;
        ASSERT_EQ(seen[m], expected) << "query block " << m;
      }
    }
  }
}

// Deterministic mode: at each query block the tickets of its visitors are 0..k-1, each once, in the order (chunk,
// slot, launch rank), chunks and ranks counted in launch order (key blocks from the last one down); with no mask or a
// causal one the slot is the step, so within a chunk that is the arrival order of a lockstep run (every CTA starts at
// once and does one step per tick), ties to the CTA launched first.
template <int kBlockM, int kBlockN>
void check_tickets(Problem const& pr) {
  auto const ords = orders<kBlockM, kBlockN>(pr, true);
  int const num_n = int(ords.size());
  std::map<int, std::vector<std::tuple<int, int, int, int>>> at;  // m -> (chunk, slot, launch rank, ticket)
  for (auto const& o : ords) {
    int const rank = num_n - 1 - o.n_block;  // key blocks launch from the last one down
    for (int s = 0; s < o.num_steps; ++s) {
      at[o.m_at(s)].emplace_back(rank / pr.chunk_width, o.slot(o.n_block, o.m_at(s)), rank, o.ticket(s));
    }
  }
  for (auto& [m, v] : at) {
    SCOPED_TRACE(::testing::Message() << "query block " << m << " with " << v.size() << " visitors");
    auto const t = ords.front().mask.trips(m);
    ASSERT_EQ(int(v.size()), t.n_end - t.n_begin);
    std::vector<int> tickets;
    for (auto const& e : v) tickets.push_back(std::get<3>(e));
    std::sort(tickets.begin(), tickets.end());
    for (int i = 0; i < int(tickets.size()); ++i) ASSERT_EQ(tickets[i], i) << "tickets are not 0..k-1";
    std::sort(v.begin(), v.end());  // (chunk, slot, launch rank)
    for (int i = 0; i < int(v.size()); ++i) {
      ASSERT_EQ(std::get<3>(v[i]), i) << "key block " << num_n - 1 - std::get<2>(v[i]) << " (slot "
                                      << std::get<1>(v[i]) << ") is out of order";
    }
  }
}

// No deadlock: play the additions of H heads x group query heads with `slots` CTAs resident at once, dispatched in
// linear order (key blocks fastest, from the last one down), each CTA adding in its program order (query head, step)
// and only when the block's semaphore equals its ticket; at every point some resident CTA must be able to add. The
// scheduler picks among the CTAs that can add at random, so many interleavings are covered.
template <int kBlockM, int kBlockN>
void check_no_deadlock(Problem const& pr, int heads, int group, int slots, std::mt19937& rng) {
  auto const ords = orders<kBlockM, kBlockN>(pr, true);
  int const num_n = int(ords.size());
  int const num_m = (pr.sq + kBlockM - 1) / kBlockM;
  std::vector<std::vector<std::pair<int, int>>> adds(num_n);  // per key block and step: (query block, ticket)
  for (int n = 0; n < num_n; ++n) {
    for (int s = 0; s < ords[n].num_steps; ++s) adds[n].emplace_back(ords[n].m_at(s), ords[n].ticket(s));
  }
  std::vector<int> semaphore(size_t(heads) * group * std::max(num_m, 1), 0);
  struct Cta {
    int head, n, next;  // next: index of the next addition, (query head g, step) flattened
  };
  std::vector<Cta> resident;
  int launched = 0, finished = 0;
  int const total = heads * num_n;
  auto launch = [&] {
    while (int(resident.size()) < slots && launched < total) {
      Cta const c{launched / num_n, num_n - 1 - launched % num_n, 0};
      ++launched;
      if (ords[c.n].num_steps == 0) {
        ++finished;  // no query block sees it: it never touches a semaphore
      } else {
        resident.push_back(c);
      }
    }
  };
  launch();
  while (finished < total) {
    std::vector<int> ready;
    for (int i = 0; i < int(resident.size()); ++i) {
      Cta const& c = resident[i];
      int const steps = ords[c.n].num_steps;
      auto const [m, ticket] = adds[c.n][c.next % steps];
      if (semaphore[(size_t(c.head) * group + c.next / steps) * num_m + m] == ticket) ready.push_back(i);
    }
    ASSERT_FALSE(ready.empty()) << "deadlock: " << resident.size() << " resident CTAs all wait (launched "
                                << launched << " of " << total << ", slots " << slots << ")";
    int const i = ready[std::uniform_int_distribution<int>(0, int(ready.size()) - 1)(rng)];
    Cta& c = resident[i];
    int const steps = ords[c.n].num_steps;
    ++semaphore[(size_t(c.head) * group + c.next / steps) * num_m + adds[c.n][c.next % steps].first];
    if (++c.next == group * steps) {
      resident.erase(resident.begin() + i);
      ++finished;
      launch();
    }
  }
}

template <int kBlockM, int kBlockN>
void check_all(Problem const& pr, std::mt19937& rng) {
  SCOPED_TRACE(::testing::Message() << "kBlockM=" << kBlockM << " kBlockN=" << kBlockN << " sq=" << pr.sq
                                    << " sk=" << pr.sk << " wl=" << pr.wl << " wr=" << pr.wr
                                    << " chunk_width=" << pr.chunk_width);
  check_visits<kBlockM, kBlockN>(pr);
  if (::testing::Test::HasFatalFailure()) return;
  check_tickets<kBlockM, kBlockN>(pr);
  if (::testing::Test::HasFatalFailure()) return;
  // Exactly chunk_width slots is the tightest the argument allows; more slots let chunks overlap.
  check_no_deadlock<kBlockM, kBlockN>(pr, 3, 2, pr.chunk_width, rng);
  if (::testing::Test::HasFatalFailure()) return;
  check_no_deadlock<kBlockM, kBlockN>(pr, 3, 1, pr.chunk_width + 5, rng);
}

TEST(BwdQueryOrder, VisitsTicketsAndProgressOnRandomProblems) {
  std::mt19937 rng(2024);
  std::uniform_int_distribution<int> len(1, 1500);
  std::uniform_int_distribution<int> win(-1, 400);
  std::uniform_int_distribution<int> width(1, 40);
  for (int iter = 0; iter < 120; ++iter) {
    Problem pr{len(rng), len(rng), win(rng), win(rng), width(rng)};
    if (iter % 4 == 0) { pr.wl = -1, pr.wr = 0; }    // causal
    if (iter % 4 == 1) { pr.wl = -1, pr.wr = -1; }   // no mask
    if (iter % 8 == 2) { pr.sk = pr.sq; }
    if (iter % 3 == 0) { pr.chunk_width = 132; }     // the whole head co-resident (an H100)
    if (iter % 10 == 5) { pr.chunk_width = 1; }      // FLASH3_DETERMINISTIC_CHUNK_CTAS=1: no co-residency
    check_all<64, 128>(pr, rng);
    check_all<64, 64>(pr, rng);
    if (HasFatalFailure()) return;
  }
}

TEST(BwdQueryOrder, EdgeShapes) {
  std::mt19937 rng(7);
  for (auto [sq, sk, wl, wr, w] : std::vector<std::tuple<int, int, int, int, int>>{
           {1, 1, -1, 0, 1}, {1, 1, -1, -1, 132}, {2, 5000, -1, 0, 3}, {5000, 2, -1, 0, 3}, {4097, 4097, -1, -1, 1},
           {4096, 4096, -1, -1, 132}, {4096, 4096, -1, 0, 132}, {3000, 1000, 100, 100, 7}, {1000, 3000, 0, 0, 2},
           {2048, 8192, -1, -1, 132}, {8192, 2048, -1, -1, 132}, {1024, 1024, 200, -1, 5}, {1024, 0, -1, -1, 4}}) {
    Problem const pr{sq, sk, wl, wr, w};
    check_all<64, 128>(pr, rng);
    check_all<64, 64>(pr, rng);
    if (HasFatalFailure()) return;
  }
}

// The point of the stagger: with no mask or a causal mask, seqlen_q = seqlen_k a multiple of 128 (so the key blocks
// of 128 cover exactly twice as many query blocks of 64), the CTAs of a head that run in lockstep never visit the same
// query block at the same step, so none waits for another. (The ascending walk of the default mode puts every CTA
// on the same block at step 0.)
TEST(BwdQueryOrder, LockstepRunsNeverCollide) {
  for (int s : {128, 1024, 2048, 8192, 16384}) {
    for (int wr : {-1, 0}) {
      Problem const pr{s, s, -1, wr, 132};
      auto check = [&](auto const& ords) {
        std::map<std::pair<int, int>, int> visits_at;  // (m, step) -> CTAs
        for (auto const& o : ords) {
          for (int st = 0; st < o.num_steps; ++st) {
            int const count = ++visits_at[std::make_pair(o.m_at(st), st)];
            ASSERT_EQ(count, 1)
                << "s=" << s << " wr=" << wr << ": two CTAs at block " << o.m_at(st) << " at step " << st;
          }
        }
      };
      check(orders<64, 128>(pr, true));
      check(orders<64, 64>(pr, true));
      if (HasFatalFailure()) return;
    }
  }
}

}  // namespace
