// Host tests (compiled by nvcc: the headers hold device code too) of the kernel-side policies that decide what a tile computes: the mask's key-block trips and the
// persistent tile order. A wrong trip range silently drops keys (or reads unmasked garbage), so the trips are
// checked against a brute-force visibility test on random shapes, windows and block sizes.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <tuple>

#include "kernels/common/bwd_prepost.cuh"
#include "kernels/common/mask.hpp"
#include "kernels/common/tile_scheduler.hpp"
#include "kernels/sm90/tile_config.hpp"

namespace {

// FA3 semantics: query i of sq sees key j of sk iff j < sk and the (bottom-right aligned) window admits it.
bool visible(int i, int j, int sq, int sk, int wl, int wr) {
  int const shift = sk - sq;
  if (j < 0 || j >= sk) return false;
  if (wr >= 0 && j > i + shift + wr) return false;
  if (wl >= 0 && j < i + shift - wl) return false;
  return true;
}

template <int kBlockM, int kBlockN>
void check_trips(int sq, int sk, int wl, int wr) {
  flash3::BlockMask<kBlockM, kBlockN, true> const mask(sq, sk, wl, wr);
  for (int m_block = 0; m_block * kBlockM < sq; ++m_block) {
    auto const t = mask.trips(m_block);
    SCOPED_TRACE(::testing::Message() << "kBlockM=" << kBlockM << " kBlockN=" << kBlockN << " sq=" << sq
                                      << " sk=" << sk << " wl=" << wl << " wr=" << wr << " m_block=" << m_block
                                      << " trips=[" << t.n_begin << "," << t.n_masked_lo << "," << t.n_masked_hi
                                      << "," << t.n_end << ")");
    if (!t.empty()) {
      ASSERT_LE(t.n_begin, t.n_masked_lo);
      ASSERT_LE(t.n_masked_lo, t.n_masked_hi);
      ASSERT_LE(t.n_masked_hi, t.n_end);
    }
    int const row_end = std::min((m_block + 1) * kBlockM, sq);
    bool any_visible = false;
    for (int i = m_block * kBlockM; i < row_end; ++i) {
      for (int j = 0; j < sk; ++j) {
        if (!visible(i, j, sq, sk, wl, wr)) continue;
        any_visible = true;
        int const n = j / kBlockN;
        ASSERT_TRUE(n >= t.n_begin && n < t.n_end) << "visible key " << j << " of row " << i << " is not visited";
      }
    }
    // An empty trip range must mean the tile really sees nothing (it then writes O = 0, LSE = -inf).
    ASSERT_EQ(t.empty(), !any_visible);
    // Blocks run without the mask must be fully visible to every valid row of the tile.
    for (int n = t.n_masked_lo; n < t.n_masked_hi; ++n) {
      for (int i = m_block * kBlockM; i < row_end; ++i) {
        for (int j = n * kBlockN; j < (n + 1) * kBlockN; ++j) {
          ASSERT_TRUE(visible(i, j, sq, sk, wl, wr)) << "unmasked block " << n << " hides key " << j << " from row "
                                                     << i;
        }
      }
    }
  }
}

TEST(MaskTrips, MatchBruteForceVisibility) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> len(1, 700);
  std::uniform_int_distribution<int> win(-1, 300);
  for (int iter = 0; iter < 150; ++iter) {
    int const sq = len(rng), sk = len(rng);
    int wl = win(rng), wr = win(rng);
    if (iter % 5 == 0) { wr = 0; }            // causal
    if (iter % 7 == 0) { wl = -1; wr = -1; }  // no window: only the seqlen_k boundary
    check_trips<128, 128>(sq, sk, wl, wr);
    check_trips<128, 80>(sq, sk, wl, wr);
    check_trips<192, 128>(sq, sk, wl, wr);
    if (HasFatalFailure()) return;
  }
}

TEST(MaskTrips, EdgeShapes) {
  for (auto [sq, sk, wl, wr] : std::vector<std::tuple<int, int, int, int>>{
           {1, 1, -1, 0}, {2, 5, -1, 0}, {5, 2, -1, 0}, {128, 128, -1, 0}, {129, 1, -1, 0}, {1, 4097, -1, 0},
           {300, 300, 0, 0}, {300, 300, 37, 11}, {1000, 10, 3, -1}, {10, 1000, -1, 5}, {256, 0, -1, -1}}) {
    check_trips<128, 128>(sq, sk, wl, wr);
    check_trips<128, 176>(sq, sk, wl, wr);
  }
}

// Backward (keys stationary): the query blocks a key block visits must be exactly those whose trips include it, and
// a tile that skips the mask must be fully visible.
template <int kBlockM, int kBlockN>
void check_query_blocks(int sq, int sk, int wl, int wr) {
  flash3::BlockMask<kBlockM, kBlockN, true> const mask(sq, sk, wl, wr);
  for (int n_block = 0; n_block * kBlockN < std::max(sk, 1); ++n_block) {
    int m_begin = 0, m_end = 0;
    mask.query_blocks(n_block, &m_begin, &m_end);
    SCOPED_TRACE(::testing::Message() << "sq=" << sq << " sk=" << sk << " wl=" << wl << " wr=" << wr
                                      << " n_block=" << n_block << " query blocks [" << m_begin << "," << m_end << ")");
    for (int m_block = 0; m_block * kBlockM < sq; ++m_block) {
      auto const t = mask.trips(m_block);
      bool const expected = n_block >= t.n_begin && n_block < t.n_end;
      ASSERT_EQ(m_block >= m_begin && m_block < m_end, expected) << "m_block " << m_block;
      if (!expected || mask.tile_needs_mask(m_block, n_block)) continue;
      for (int i = m_block * kBlockM; i < std::min((m_block + 1) * kBlockM, sq); ++i)
        for (int j = n_block * kBlockN; j < (n_block + 1) * kBlockN; ++j)
          ASSERT_TRUE(visible(i, j, sq, sk, wl, wr)) << "unmasked tile hides key " << j << " from row " << i;
    }
  }
}

TEST(MaskTrips, BackwardQueryBlocksMatchTrips) {
  std::mt19937 rng(4321);
  std::uniform_int_distribution<int> len(1, 600);
  std::uniform_int_distribution<int> win(-1, 300);
  for (int iter = 0; iter < 150; ++iter) {
    int const sq = len(rng), sk = len(rng);
    int wl = win(rng), wr = win(rng);
    if (iter % 5 == 0) { wr = 0; }
    if (iter % 7 == 0) { wl = -1; wr = -1; }
    check_query_blocks<64, 128>(sq, sk, wl, wr);
    if (HasFatalFailure()) return;
  }
  check_query_blocks<64, 128>(256, 0, -1, -1);
  check_query_blocks<64, 128>(1, 1, -1, 0);
  check_query_blocks<64, 128>(1000, 10, 3, -1);
}

TEST(TileOrder, HeadMajorVisitsEveryTileOnceLongestFirst) {
  flash3::HeadMajorTileOrder const order{7, 5, 3};  // m blocks, heads, batch
  std::set<std::tuple<int, int, int>> seen;
  for (int t = 0; t < order.num_tiles(); ++t) {
    flash3::TileCoord const c = order.coord(t);
    ASSERT_TRUE(c.m_block >= 0 && c.m_block < 7 && c.head >= 0 && c.head < 5 && c.batch >= 0 && c.batch < 3);
    ASSERT_TRUE(seen.insert({c.m_block, c.head, c.batch}).second) << "tile " << t << " repeats a coordinate";
    if (t % 7 != 0) {
      // Within one (batch, head) the query blocks are contiguous and run from the last (longest under causal).
      flash3::TileCoord const prev = order.coord(t - 1);
      EXPECT_EQ(prev.head, c.head);
      EXPECT_EQ(prev.batch, c.batch);
      EXPECT_EQ(prev.m_block, c.m_block + 1);
    }
  }
  EXPECT_EQ(int(seen.size()), 7 * 5 * 3);
}

// The backward preprocess reads O and dO 16 bytes at a time only when every row start is 16-byte aligned; any one
// misaligned pointer, stride or row length must send it to the scalar kernel (a 16-byte load from a misaligned
// address faults).
TEST(BackwardPreprocess, VectorizedOnlyWhenEveryRowIsAligned) {
  alignas(16) static unsigned char storage[64];
  flash3::BwdParams aligned{};
  aligned.head_dim_v = 128;
  aligned.head_dim_rounded = 128;
  aligned.out = storage;
  aligned.dout = storage + 16;
  aligned.o_row_stride = aligned.do_row_stride = 3 * 16 * 128;  // e.g. packed (b, s, 3, h, d) views
  aligned.o_head_stride = aligned.do_head_stride = 128;
  aligned.o_batch_stride = aligned.do_batch_stride = int64_t(3) * 16 * 128 * 4096;
  using BF16 = cutlass::bfloat16_t;
  EXPECT_TRUE(flash3::bwd_preprocess_vectorizable<BF16>(aligned));
  flash3::BwdParams p = aligned;
  p.head_dim_v = 72;  // a multiple of 8 that is no power of two: still whole 16-byte chunks
  p.head_dim_rounded = 96;
  EXPECT_TRUE(flash3::bwd_preprocess_vectorizable<BF16>(p));

  auto expect_scalar = [&](char const* what, auto&& spoil) {
    flash3::BwdParams q = aligned;
    spoil(q);
    EXPECT_FALSE(flash3::bwd_preprocess_vectorizable<BF16>(q)) << what;
  };
  expect_scalar("out + 2 bytes", [&](flash3::BwdParams& q) { q.out = storage + 2; });
  expect_scalar("dout + 8 bytes", [&](flash3::BwdParams& q) { q.dout = storage + 8; });
  expect_scalar("o_row_stride odd", [](flash3::BwdParams& q) { q.o_row_stride += 1; });
  expect_scalar("do_row_stride + 4", [](flash3::BwdParams& q) { q.do_row_stride += 4; });
  expect_scalar("o_head_stride + 2", [](flash3::BwdParams& q) { q.o_head_stride += 2; });
  expect_scalar("do_batch_stride + 1", [](flash3::BwdParams& q) { q.do_batch_stride += 1; });
  expect_scalar("head_dim_v 100", [](flash3::BwdParams& q) { q.head_dim_v = 100; });
  // fp32 has 4 elements per 16 bytes: a row stride of 4 floats is aligned there, not for 8 bf16
  flash3::BwdParams f = aligned;
  f.o_row_stride = f.do_row_stride = 4 * 129;
  EXPECT_TRUE(flash3::bwd_preprocess_vectorizable<float>(f));
  EXPECT_FALSE(flash3::bwd_preprocess_vectorizable<BF16>(f));
}

// The masked hdim 64 forward carries a second tile for long rows of keys; the rule picks it only when both the
// queries and the keys a query can see (the window bounds them) reach 4096, and no other kernel has one.
TEST(ForwardTileChoice, LongSequenceTileOnlyForLongRowsOfKeys) {
  using flash3::fwd_has_long_sequence_tile;
  using flash3::fwd_wants_long_sequence_tile;
  EXPECT_TRUE(fwd_has_long_sequence_tile(64, 64, true));
  EXPECT_FALSE(fwd_has_long_sequence_tile(64, 64, false));
  for (int d : {96, 128, 192, 256})
    for (bool local : {false, true}) EXPECT_FALSE(fwd_has_long_sequence_tile(d, d, local)) << d << " " << local;
  constexpr auto wide = flash3::fwd_tile_config_sm90(64, 64, true, true);
  constexpr auto base = flash3::fwd_tile_config_sm90(64, 64, true, false);
  EXPECT_EQ(wide.block_m, 192);
  EXPECT_FALSE(wide.pingpong);
  EXPECT_EQ(base.block_m, 128);
  EXPECT_TRUE(base.pingpong);

  EXPECT_TRUE(fwd_wants_long_sequence_tile(3072, 3072, -1, 0));     // causal 3k
  EXPECT_TRUE(fwd_wants_long_sequence_tile(16384, 16384, -1, -1));  // no window
  EXPECT_FALSE(fwd_wants_long_sequence_tile(2048, 2048, -1, 0));    // causal 2k (a tie; the 128-row tile)
  EXPECT_FALSE(fwd_wants_long_sequence_tile(3071, 16384, -1, 0));   // too few queries
  EXPECT_FALSE(fwd_wants_long_sequence_tile(8192, 3071, -1, 0));    // too few keys
  EXPECT_FALSE(fwd_wants_long_sequence_tile(8192, 8192, 1024, 0));  // the window bounds the keys
  EXPECT_TRUE(fwd_wants_long_sequence_tile(8192, 8192, 3071, 0));   // window of 3072 keys
  EXPECT_TRUE(fwd_wants_long_sequence_tile(8192, 8192, 1536, 1535));
  EXPECT_FALSE(fwd_wants_long_sequence_tile(8192, 8192, 1536, 1534));
}

}  // namespace
