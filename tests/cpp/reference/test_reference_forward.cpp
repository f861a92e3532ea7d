// The double reference's forward against an independent textbook computation: per sequence, build the full score
// matrix, mask it with an explicit visibility predicate, exponentiate without the max shift, normalise, multiply.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/test_data.hpp"
#include "common/tolerance.hpp"
#include "reference/reference_attention.hpp"

namespace {

using flash3::ref::reference_forward;
using flash3::ref::ReferenceProblem;

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// One sequence of one head, laid out densely: q (sq, d), k (sk, d), v (sk, dv).
struct Slice {
  int sq, sk, d, dv;
  std::vector<double> q, k, v;
};

// Visibility written straight from the FA3 definition (causal as its own term rather than as window_right = 0).
bool visible(int i, int j, int sq, int sk, bool causal, int left, int right) {
  if (j >= sk) return false;
  const int diag = i + sk - sq;
  if (causal && j > diag) return false;
  if (right >= 0 && j > diag + right) return false;
  if (left >= 0 && j < diag - left) return false;
  return true;
}

// Textbook attention of one slice: O (sq, dv) and lse (sq).
void textbook(const Slice& s, double scale, bool causal, int left, int right, double softcap, std::vector<double>* o,
              std::vector<double>* lse) {
  std::vector<double> S(static_cast<size_t>(s.sq) * s.sk);
  std::vector<char> M(S.size());
  for (int i = 0; i < s.sq; ++i) {
    for (int j = 0; j < s.sk; ++j) {
      double x = 0;
      for (int c = 0; c < s.d; ++c) x += s.q[i * s.d + c] * s.k[j * s.d + c];
      x *= scale;
      if (softcap > 0) x = softcap * std::tanh(x / softcap);
      S[i * s.sk + j] = x;
      M[i * s.sk + j] = visible(i, j, s.sq, s.sk, causal, left, right);
    }
  }
  o->assign(static_cast<size_t>(s.sq) * s.dv, 0.0);
  lse->assign(static_cast<size_t>(s.sq), kNegInf);
  for (int i = 0; i < s.sq; ++i) {
    double z = 0;
    for (int j = 0; j < s.sk; ++j) z += M[i * s.sk + j] ? std::exp(S[i * s.sk + j]) : 0.0;
    if (z == 0) continue;
    (*lse)[i] = std::log(z);
    for (int c = 0; c < s.dv; ++c) {
      double acc = 0;
      for (int j = 0; j < s.sk; ++j) acc += M[i * s.sk + j] ? std::exp(S[i * s.sk + j]) / z * s.v[j * s.dv + c] : 0.0;
      (*o)[i * s.dv + c] = acc;
    }
  }
}

// Runs the reference on `p` and checks every used row of every (sequence, head) against the textbook on the
// extracted slice, and that unused rows stay untouched (a sentinel survives there).
void check_against_textbook(const ReferenceProblem& p, uint64_t seed) {
  SCOPED_TRACE(p.to_string());
  const int d = p.head_dim, dv = p.dv();
  const auto q = flash3_test::random_normal(p.q_elems(), seed);
  const auto k = flash3_test::random_normal(p.k_elems(), seed + 1);
  const auto v = flash3_test::random_normal(p.v_elems(), seed + 2);
  const double kSentinel = 12345.0;
  std::vector<double> out(static_cast<size_t>(p.out_elems()), kSentinel);
  std::vector<double> lse(static_cast<size_t>(p.lse_elems()), kSentinel);
  reference_forward(p, q.data(), k.data(), v.data(), out.data(), lse.data());

  const auto out_used = flash3_test::used_out_mask(p);
  const auto lse_used = flash3_test::used_lse_mask(p);
  for (size_t i = 0; i < out.size(); ++i) {
    if (!out_used[i]) {
      ASSERT_EQ(out[i], kSentinel) << "unused out element " << i << " was written";
    }
  }
  for (size_t i = 0; i < lse.size(); ++i) {
    if (!lse_used[i]) {
      ASSERT_EQ(lse[i], kSentinel) << "unused lse element " << i << " was written";
    }
  }

  const int group = p.heads / p.heads_k;
  for (int b = 0; b < p.batch; ++b) {
    // Slice boundaries computed here from the raw vectors, not through ReferenceProblem::sequence.
    const int q0 = p.varlen_q() ? p.cu_seqlens_q[b] : b * p.seqlen_q;
    const int k0 = p.varlen_k() ? p.cu_seqlens_k[b] : b * p.seqlen_k;
    const int sq = !p.seqused_q.empty() ? p.seqused_q[b]
                   : p.varlen_q()       ? p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b]
                                        : p.seqlen_q;
    const int sk = !p.seqused_k.empty() ? p.seqused_k[b]
                   : p.varlen_k()       ? p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b]
                                        : p.seqlen_k;
    for (int hq = 0; hq < p.heads; ++hq) {
      const int hkv = hq / group;
      Slice s{sq, sk, d, dv, {}, {}, {}};
      for (int i = 0; i < sq; ++i)
        for (int c = 0; c < d; ++c) s.q.push_back(q[(static_cast<size_t>(q0 + i) * p.heads + hq) * d + c]);
      for (int j = 0; j < sk; ++j) {
        for (int c = 0; c < d; ++c) s.k.push_back(k[(static_cast<size_t>(k0 + j) * p.heads_k + hkv) * d + c]);
        for (int c = 0; c < dv; ++c) s.v.push_back(v[(static_cast<size_t>(k0 + j) * p.heads_k + hkv) * dv + c]);
      }
      std::vector<double> o_tb, lse_tb;
      const double scale = p.softmax_scale > 0 ? p.softmax_scale : 1.0 / std::sqrt(static_cast<double>(d));
      textbook(s, scale, p.causal, p.window_left, p.window_right, p.softcap, &o_tb, &lse_tb);
      for (int i = 0; i < sq; ++i) {
        const size_t lse_at = p.varlen_q() ? static_cast<size_t>(hq) * p.rows_q() + q0 + i
                                           : (static_cast<size_t>(b) * p.heads + hq) * p.seqlen_q + i;
        if (std::isinf(lse_tb[i])) {
          ASSERT_EQ(lse[lse_at], kNegInf) << "b=" << b << " h=" << hq << " i=" << i;
        } else {
          ASSERT_NEAR(lse[lse_at], lse_tb[i], 1e-12 * std::max(1.0, std::fabs(lse_tb[i])))
              << "b=" << b << " h=" << hq << " i=" << i;
        }
        for (int c = 0; c < dv; ++c) {
          const double got = out[(static_cast<size_t>(q0 + i) * p.heads + hq) * dv + c];
          ASSERT_NEAR(got, o_tb[i * dv + c], 1e-12) << "b=" << b << " h=" << hq << " i=" << i << " c=" << c;
        }
      }
    }
  }
}

ReferenceProblem batch_problem(int b, int sq, int sk, int h, int hk, int d, int dv) {
  ReferenceProblem p;
  p.batch = b;
  p.seqlen_q = sq;
  p.seqlen_k = sk;
  p.heads = h;
  p.heads_k = hk;
  p.head_dim = d;
  p.head_dim_v = dv;
  return p;
}

TEST(ReferenceForward, PlainMatchesTextbook) {
  check_against_textbook(batch_problem(2, 9, 9, 2, 2, 8, 8), 1);
  check_against_textbook(batch_problem(1, 1, 1, 1, 1, 4, 4), 2);
  check_against_textbook(batch_problem(3, 5, 13, 3, 1, 6, 10), 3);
}

TEST(ReferenceForward, CausalBothAspectRatios) {
  for (auto [sq, sk] : {std::pair{7, 7}, {5, 12}, {12, 5}, {1, 9}, {9, 1}}) {
    auto p = batch_problem(2, sq, sk, 2, 1, 8, 4);
    p.causal = true;
    check_against_textbook(p, 10 + sq * 31 + sk);
  }
}

TEST(ReferenceForward, WindowsSoftcapAndGqa) {
  auto p = batch_problem(2, 11, 17, 4, 2, 8, 8);
  p.window_left = 3;
  p.window_right = 2;
  check_against_textbook(p, 20);
  p.window_left = -1;
  p.window_right = 0;
  check_against_textbook(p, 21);
  p.window_left = 4;
  p.window_right = -1;
  check_against_textbook(p, 22);
  p.causal = true;
  p.window_left = 2;
  p.window_right = -1;
  check_against_textbook(p, 23);
  p.softcap = 0.8;
  p.softmax_scale = 1.7;  // large scores so that tanh bends
  check_against_textbook(p, 24);
  auto mqa = batch_problem(1, 13, 6, 5, 1, 16, 8);
  mqa.softcap = 2.0;
  mqa.window_left = 1;
  mqa.window_right = 1;
  check_against_textbook(mqa, 25);
}

TEST(ReferenceForward, VarlenWithEmptySequencesAndSeqused) {
  ReferenceProblem p = batch_problem(4, 0, 0, 4, 2, 8, 6);
  p.cu_seqlens_q = {0, 5, 5, 14, 17};   // the second sequence has no queries
  p.cu_seqlens_k = {0, 8, 11, 11, 20};  // the third has no keys: all its rows are fully masked
  check_against_textbook(p, 30);
  p.causal = true;
  check_against_textbook(p, 31);
  p.seqused_q = {3, 0, 9, 2};
  p.seqused_k = {6, 1, 0, 4};
  check_against_textbook(p, 32);
  p.causal = false;
  p.window_left = 2;
  p.window_right = 1;
  p.softcap = 1.5;
  check_against_textbook(p, 33);
}

TEST(ReferenceForward, SequsedInBatchMode) {
  auto p = batch_problem(3, 10, 12, 2, 2, 8, 8);
  p.seqused_k = {12, 4, 0};
  p.causal = true;
  check_against_textbook(p, 40);
  p.seqused_q = {10, 3, 7};
  check_against_textbook(p, 41);
}

// Many random problems over every feature at once.
TEST(ReferenceForward, RandomProblemsMatchTextbook) {
  std::mt19937 gen(2024);
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(gen); };
  for (int n = 0; n < 80; ++n) {
    ReferenceProblem p;
    p.batch = uni(1, 3);
    p.heads_k = uni(1, 3);
    p.heads = p.heads_k * uni(1, 3);
    p.head_dim = uni(1, 12);
    p.head_dim_v = uni(1, 12);
    p.causal = uni(0, 2) == 0;
    p.window_left = uni(0, 2) == 0 ? uni(0, 6) : -1;
    p.window_right = p.causal ? (uni(0, 1) ? 0 : -1) : (uni(0, 2) == 0 ? uni(0, 6) : -1);
    p.softcap = uni(0, 2) == 0 ? 0.5 + uni(0, 30) / 10.0 : 0.0;
    p.softmax_scale = uni(0, 1) ? 0.0 : 0.2 + uni(0, 20) / 10.0;
    const bool varlen = uni(0, 1);
    if (varlen) {
      p.cu_seqlens_q = {0};
      p.cu_seqlens_k = {0};
      for (int b = 0; b < p.batch; ++b) {
        p.cu_seqlens_q.push_back(p.cu_seqlens_q.back() + uni(0, 20));
        p.cu_seqlens_k.push_back(p.cu_seqlens_k.back() + uni(0, 20));
      }
    } else {
      p.seqlen_q = uni(1, 24);
      p.seqlen_k = uni(1, 24);
    }
    if (uni(0, 2) == 0) {
      for (int b = 0; b < p.batch; ++b) {
        const int len = varlen ? p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b] : p.seqlen_q;
        p.seqused_q.push_back(uni(0, len));
      }
    }
    if (uni(0, 2) == 0) {
      for (int b = 0; b < p.batch; ++b) {
        const int len = varlen ? p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b] : p.seqlen_k;
        p.seqused_k.push_back(uni(0, len));
      }
    }
    check_against_textbook(p, 1000 + n);
    if (HasFatalFailure()) return;
  }
}

// The mask pattern, read off exactly: with v_j = e_j (dv = sk) the output row is the probability row, which must
// be exactly 0 on hidden keys and positive on visible ones.
std::vector<double> probabilities(ReferenceProblem p, uint64_t seed, std::vector<double>* lse = nullptr) {
  p.head_dim_v = p.seqlen_k;
  const auto q = flash3_test::random_normal(p.q_elems(), seed);
  const auto k = flash3_test::random_normal(p.k_elems(), seed + 1);
  std::vector<double> v(static_cast<size_t>(p.v_elems()), 0.0);
  for (int j = 0; j < p.seqlen_k; ++j) v[static_cast<size_t>(j) * p.seqlen_k + j] = 1.0;
  std::vector<double> out(static_cast<size_t>(p.out_elems())), l(static_cast<size_t>(p.lse_elems()));
  reference_forward(p, q.data(), k.data(), v.data(), out.data(), l.data());
  if (lse) *lse = l;
  return out;
}

void expect_pattern(const std::vector<double>& probs, int sk, const std::vector<std::string>& rows) {
  for (size_t i = 0; i < rows.size(); ++i) {
    double sum = 0;
    for (int j = 0; j < sk; ++j) {
      const double pij = probs[i * sk + j];
      sum += pij;
      if (rows[i][j] == 'x')
        EXPECT_GT(pij, 0.0) << "row " << i << " key " << j << " should be visible";
      else
        EXPECT_EQ(pij, 0.0) << "row " << i << " key " << j << " should be masked";
    }
    const bool any = rows[i].find('x') != std::string::npos;
    EXPECT_NEAR(sum, any ? 1.0 : 0.0, 1e-14) << "row " << i;
  }
}

TEST(ReferenceForward, CausalIsBottomRightAligned) {
  auto p = batch_problem(1, 2, 5, 1, 1, 4, 5);
  p.causal = true;
  // The FA3 docs' example: seqlen_q = 2, seqlen_k = 5 -> row 0 sees keys 0..3, row 1 sees 0..4.
  expect_pattern(probabilities(p, 50), 5, {"xxxx.", "xxxxx"});
}

TEST(ReferenceForward, CausalWithMoreQueriesThanKeysMasksLeadingRows) {
  auto p = batch_problem(1, 5, 2, 1, 1, 4, 2);
  p.causal = true;
  std::vector<double> lse;
  const auto probs = probabilities(p, 51, &lse);
  expect_pattern(probs, 2, {"..", "..", "..", "x.", "xx"});
  for (int i = 0; i < 3; ++i) EXPECT_EQ(lse[i], kNegInf) << "fully masked row " << i;
  for (int i = 3; i < 5; ++i) EXPECT_TRUE(std::isfinite(lse[i]));
}

TEST(ReferenceForward, SlidingWindowPattern) {
  auto p = batch_problem(1, 6, 6, 1, 1, 4, 6);
  p.window_left = 1;
  p.window_right = 2;
  expect_pattern(probabilities(p, 52), 6, {"xxx...", "xxxx..", ".xxxx.", "..xxxx", "...xxx", "....xx"});
  p.window_right = -1;
  p.causal = true;  // causal + left window: [i - 1, i]
  expect_pattern(probabilities(p, 53), 6, {"x.....", "xx....", ".xx...", "..xx..", "...xx.", "....xx"});
}

TEST(ReferenceForward, KnownLseValue) {
  // d = 1, q = 1, keys 0.5, -1, 2, scale 1: lse = log(e^0.5 + e^-1 + e^2), out = softmax-weighted v.
  auto p = batch_problem(1, 1, 3, 1, 1, 1, 1);
  p.softmax_scale = 1.0;
  const double q[] = {1.0}, k[] = {0.5, -1.0, 2.0}, v[] = {3.0, -2.0, 0.25};
  double out[1], lse[1];
  reference_forward(p, q, k, v, out, lse);
  const double z = std::exp(0.5) + std::exp(-1.0) + std::exp(2.0);
  EXPECT_NEAR(lse[0], std::log(z), 1e-15);
  EXPECT_NEAR(out[0], (std::exp(0.5) * 3.0 - std::exp(-1.0) * 2.0 + std::exp(2.0) * 0.25) / z, 1e-15);
}

// GQA must equal MHA with each kv head repeated for its group.
TEST(ReferenceForward, GqaEqualsRepeatedKvHeads) {
  auto gqa = batch_problem(2, 7, 9, 6, 2, 8, 5);
  gqa.causal = true;
  auto mha = gqa;
  mha.heads_k = 6;
  const auto q = flash3_test::random_normal(gqa.q_elems(), 60);
  const auto k = flash3_test::random_normal(gqa.k_elems(), 61);
  const auto v = flash3_test::random_normal(gqa.v_elems(), 62);
  std::vector<double> k_rep, v_rep;
  for (int r = 0; r < 2 * 9; ++r) {
    for (int h = 0; h < 6; ++h) {
      for (int c = 0; c < 8; ++c) k_rep.push_back(k[(static_cast<size_t>(r) * 2 + h / 3) * 8 + c]);
      for (int c = 0; c < 5; ++c) v_rep.push_back(v[(static_cast<size_t>(r) * 2 + h / 3) * 5 + c]);
    }
  }
  std::vector<double> o1(gqa.out_elems()), o2(gqa.out_elems()), l1(gqa.lse_elems()), l2(gqa.lse_elems());
  reference_forward(gqa, q.data(), k.data(), v.data(), o1.data(), l1.data());
  reference_forward(mha, q.data(), k_rep.data(), v_rep.data(), o2.data(), l2.data());
  EXPECT_EQ(o1, o2);
  EXPECT_EQ(l1, l2);
}

// Threads split the work by (batch, head): a large problem gives bit-identical results to the same rows computed as
// small single-threaded problems.
TEST(ReferenceForward, LargeProblemIsDeterministic) {
  auto p = batch_problem(2, 300, 300, 8, 4, 64, 64);
  p.causal = true;
  const auto q = flash3_test::random_normal(p.q_elems(), 70);
  const auto k = flash3_test::random_normal(p.k_elems(), 71);
  const auto v = flash3_test::random_normal(p.v_elems(), 72);
  std::vector<double> o1(p.out_elems()), o2(p.out_elems()), l1(p.lse_elems()), l2(p.lse_elems());
  reference_forward(p, q.data(), k.data(), v.data(), o1.data(), l1.data());
  reference_forward(p, q.data(), k.data(), v.data(), o2.data(), l2.data());
  EXPECT_EQ(o1, o2);
  EXPECT_EQ(l1, l2);
  // Sequence 1 alone, as a batch of one.
  auto one = p;
  one.batch = 1;
  const size_t qn = one.q_elems(), kn = one.k_elems(), vn = one.v_elems(), on = one.out_elems();
  std::vector<double> o3(on), l3(one.lse_elems());
  reference_forward(one, q.data() + qn, k.data() + kn, v.data() + vn, o3.data(), l3.data());
  EXPECT_TRUE(std::equal(o3.begin(), o3.end(), o1.begin() + on));
  EXPECT_TRUE(std::equal(l3.begin(), l3.end(), l1.begin() + l3.size()));
}

TEST(ReferenceForward, RejectsInconsistentProblems) {
  auto p = batch_problem(1, 4, 4, 3, 2, 8, 8);  // 3 heads over 2 kv heads
  EXPECT_THROW(p.validate(), std::invalid_argument);
  p = batch_problem(2, 4, 4, 2, 2, 8, 8);
  p.cu_seqlens_q = {0, 4};  // needs batch + 1 entries
  EXPECT_THROW(p.validate(), std::invalid_argument);
  p = batch_problem(2, 4, 4, 2, 2, 8, 8);
  p.seqused_k = {5, 1};  // more than the sequence has
  EXPECT_THROW(p.validate(), std::invalid_argument);
  p = batch_problem(1, 4, 4, 1, 1, 8, 8);
  p.causal = true;
  p.window_right = 3;
  EXPECT_THROW(p.validate(), std::invalid_argument);
}

}  // namespace
