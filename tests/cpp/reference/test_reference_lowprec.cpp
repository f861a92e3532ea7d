// The low-precision naive forward (the tolerance rule's yardstick): close to the double reference, but visibly not
// equal to it, and with outputs that are exactly representable in the emulated precision.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "common/test_data.hpp"
#include "reference/reference_attention.hpp"

namespace {

using flash3::ref::Precision;
using flash3::ref::ReferenceProblem;

struct Errors {
  double out = 0, lse = 0;
};

Errors lowprec_errors(const ReferenceProblem& p, Precision prec, uint64_t seed) {
  const auto q = flash3_test::random_normal(p.q_elems(), prec, seed);
  const auto k = flash3_test::random_normal(p.k_elems(), prec, seed + 1);
  const auto v = flash3_test::random_normal(p.v_elems(), prec, seed + 2);
  std::vector<double> o_ref(p.out_elems()), l_ref(p.lse_elems()), o_low(p.out_elems()), l_low(p.lse_elems());
  flash3::ref::reference_forward(p, q.data(), k.data(), v.data(), o_ref.data(), l_ref.data());
  flash3::ref::reference_forward_lowprec(p, prec, q.data(), k.data(), v.data(), o_low.data(), l_low.data());
  Errors e;
  for (size_t i = 0; i < o_ref.size(); ++i) {
    EXPECT_EQ(o_low[i], flash3::ref::round_to(prec, static_cast<float>(o_low[i])))
        << "lowprec output " << i << " is not representable in " << flash3::ref::precision_name(prec);
    e.out = std::max(e.out, std::fabs(o_low[i] - o_ref[i]));
  }
  for (size_t i = 0; i < l_ref.size(); ++i) {
    if (std::isinf(l_ref[i])) {
      EXPECT_EQ(l_low[i], l_ref[i]) << "fully masked row " << i;
      continue;
    }
    EXPECT_EQ(l_low[i], static_cast<double>(static_cast<float>(l_low[i]))) << "lse " << i << " is not fp32";
    e.lse = std::max(e.lse, std::fabs(l_low[i] - l_ref[i]));
  }
  return e;
}

ReferenceProblem problem(int sq, int sk, int h, int hk, int d) {
  ReferenceProblem p;
  p.batch = 2;
  p.seqlen_q = sq;
  p.seqlen_k = sk;
  p.heads = h;
  p.heads_k = hk;
  p.head_dim = d;
  p.head_dim_v = d;
  return p;
}

TEST(ReferenceLowprec, CloseToDoubleButNotEqual) {
  auto p = problem(64, 80, 2, 1, 64);
  p.causal = true;
  const Errors bf16 = lowprec_errors(p, Precision::kBFloat16, 200);
  const Errors fp16 = lowprec_errors(p, Precision::kFloat16, 200);
  // Not identical: rounding S, P and O to the dtype must leave a trace ...
  EXPECT_GT(bf16.out, 1e-4);
  EXPECT_GT(fp16.out, 1e-5);
  // ... of the size the dtype implies (outputs are O(1); a few dozen units of roundoff at most) ...
  EXPECT_LT(bf16.out, 40 * flash3::ref::unit_roundoff(Precision::kBFloat16));
  EXPECT_LT(fp16.out, 40 * flash3::ref::unit_roundoff(Precision::kFloat16));
  // ... and bf16 (8 bits of mantissa) is coarser than fp16 (11 bits).
  EXPECT_GT(bf16.out, 2 * fp16.out);
  EXPECT_LT(bf16.lse, 0.1);
  EXPECT_LT(fp16.lse, 0.02);
  EXPECT_GT(bf16.lse, 0.0);
}

TEST(ReferenceLowprec, SoftcapWindowAndGqa) {
  auto p = problem(33, 47, 4, 2, 32);
  p.softcap = 3.0;
  p.window_left = 5;
  p.window_right = 7;
  const Errors bf16 = lowprec_errors(p, Precision::kBFloat16, 210);
  EXPECT_GT(bf16.out, 1e-4);
  EXPECT_LT(bf16.out, 40 * flash3::ref::unit_roundoff(Precision::kBFloat16));
}

// One visible key per row: softmax gives exactly 1, so out equals v exactly in any precision.
TEST(ReferenceLowprec, SingleKeyIsExact) {
  auto p = problem(9, 9, 2, 2, 16);
  p.window_left = 0;
  p.window_right = 0;
  const Errors e = lowprec_errors(p, Precision::kBFloat16, 220);
  EXPECT_EQ(e.out, 0.0);
}

TEST(ReferenceLowprec, VarlenFullyMaskedRows) {
  ReferenceProblem p = problem(0, 0, 2, 1, 8);
  p.batch = 3;
  p.cu_seqlens_q = {0, 4, 4, 9};
  p.cu_seqlens_k = {0, 6, 9, 9};  // the last sequence has no keys
  const auto q = flash3_test::random_normal(p.q_elems(), Precision::kFloat16, 230);
  const auto k = flash3_test::random_normal(p.k_elems(), Precision::kFloat16, 231);
  const auto v = flash3_test::random_normal(p.v_elems(), Precision::kFloat16, 232);
  std::vector<double> o(p.out_elems(), 5.0), l(p.lse_elems(), 5.0);
  flash3::ref::reference_forward_lowprec(p, Precision::kFloat16, q.data(), k.data(), v.data(), o.data(), l.data());
  for (int row = 4; row < 9; ++row) {
    for (int h = 0; h < 2; ++h) {
      EXPECT_EQ(l[h * 9 + row], -std::numeric_limits<double>::infinity());
      for (int c = 0; c < 8; ++c) EXPECT_EQ(o[(row * 2 + h) * 8 + c], 0.0);
    }
  }
  EXPECT_TRUE(std::isfinite(l[0]));
}

}  // namespace
