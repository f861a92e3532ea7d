// The double reference's backward against central finite differences of L = sum(out * dout).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/test_data.hpp"
#include "reference/reference_attention.hpp"

namespace {

using flash3::ref::ReferenceProblem;

// L(q, k, v) = sum over used rows of out * dout (unused rows of out stay 0).
double loss(const ReferenceProblem& p, const std::vector<double>& q, const std::vector<double>& k,
            const std::vector<double>& v, const std::vector<double>& dout) {
  std::vector<double> out(static_cast<size_t>(p.out_elems()), 0.0);
  flash3::ref::reference_forward(p, q.data(), k.data(), v.data(), out.data(), nullptr);
  double l = 0;
  for (size_t i = 0; i < out.size(); ++i) l += out[i] * dout[i];
  return l;
}

// Compares every entry of the analytic gradient of one input with the central difference
// (L(x + h) - L(x - h)) / 2h. With h = 1e-5 the truncation error is O(h^2) ~ 1e-10 and the rounding error
// ~ 1e-16 * |L| / h ~ 1e-10, so 1e-7 (+ 1e-6 relative) separates a right gradient from a wrong one by orders.
void check_gradient(const char* name, const ReferenceProblem& p, std::vector<double>* x,
                    const std::vector<double>& analytic, const std::vector<double>& q, const std::vector<double>& k,
                    const std::vector<double>& v, const std::vector<double>& dout, int* nonzero) {
  const double h = 1e-5;
  for (size_t i = 0; i < x->size(); ++i) {
    const double saved = (*x)[i];
    (*x)[i] = saved + h;
    const double lp = loss(p, q, k, v, dout);
    (*x)[i] = saved - h;
    const double lm = loss(p, q, k, v, dout);
    (*x)[i] = saved;
    const double fd = (lp - lm) / (2 * h);
    ASSERT_NEAR(analytic[i], fd, 1e-7 + 1e-6 * std::fabs(fd)) << name << "[" << i << "]";
    if (std::fabs(analytic[i]) > 1e-9) ++*nonzero;
  }
}

void check_backward(const ReferenceProblem& p, uint64_t seed) {
  SCOPED_TRACE(p.to_string());
  auto q = flash3_test::random_normal(p.q_elems(), seed);
  auto k = flash3_test::random_normal(p.k_elems(), seed + 1);
  auto v = flash3_test::random_normal(p.v_elems(), seed + 2);
  const auto dout = flash3_test::random_normal(p.out_elems(), seed + 3);
  // Start from garbage: the backward must overwrite every element.
  std::vector<double> dq(q.size(), 7.0), dk(k.size(), 7.0), dv(v.size(), 7.0);
  flash3::ref::reference_backward(p, q.data(), k.data(), v.data(), dout.data(), dq.data(), dk.data(), dv.data());
  int nonzero = 0;
  check_gradient("dq", p, &q, dq, q, k, v, dout, &nonzero);
  check_gradient("dk", p, &k, dk, q, k, v, dout, &nonzero);
  check_gradient("dv", p, &v, dv, q, k, v, dout, &nonzero);
  // Guard against a vacuous pass (e.g. everything masked).
  EXPECT_GT(nonzero, static_cast<int>(q.size() + k.size() + v.size()) / 5);
}

ReferenceProblem problem(int b, int sq, int sk, int h, int hk, int d, int dv) {
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

TEST(ReferenceBackward, PlainMatchesFiniteDifferences) { check_backward(problem(2, 4, 6, 2, 2, 3, 5), 100); }

TEST(ReferenceBackward, CausalMatchesFiniteDifferences) {
  auto p = problem(2, 6, 4, 2, 2, 4, 3);  // more queries than keys: the first two rows see nothing
  p.causal = true;
  check_backward(p, 110);
  p = problem(1, 4, 7, 1, 1, 4, 4);
  p.causal = true;
  check_backward(p, 111);
}

TEST(ReferenceBackward, WindowMatchesFiniteDifferences) {
  auto p = problem(1, 7, 7, 2, 1, 4, 4);
  p.window_left = 1;
  p.window_right = 2;
  check_backward(p, 120);
  p.causal = true;  // causal + left window
  p.window_right = -1;
  p.window_left = 2;
  check_backward(p, 121);
}

TEST(ReferenceBackward, SoftcapMatchesFiniteDifferences) {
  auto p = problem(2, 5, 6, 2, 2, 4, 3);
  p.softcap = 0.7;
  p.softmax_scale = 1.3;  // scores well into tanh's curved part
  check_backward(p, 130);
  p.causal = true;
  check_backward(p, 131);
}

TEST(ReferenceBackward, GqaMatchesFiniteDifferences) {
  auto p = problem(2, 5, 5, 6, 2, 3, 4);
  p.causal = true;
  check_backward(p, 140);
  auto mqa = problem(1, 4, 6, 3, 1, 4, 2);
  mqa.softcap = 1.1;
  check_backward(mqa, 141);
}

TEST(ReferenceBackward, VarlenMatchesFiniteDifferences) {
  auto p = problem(3, 0, 0, 4, 2, 3, 4);
  p.cu_seqlens_q = {0, 3, 3, 8};  // sequence 1 has no queries
  p.cu_seqlens_k = {0, 4, 6, 6};  // sequence 2 has no keys
  check_backward(p, 150);
  p.seqused_q = {2, 0, 4};
  p.seqused_k = {3, 1, 0};
  p.causal = true;
  check_backward(p, 151);
  p.causal = false;
  p.window_left = 1;
  p.window_right = 0;
  p.softcap = 0.9;
  check_backward(p, 152);
}

// Under GQA the kv gradients are the sums over the group's query heads: compare with MHA on repeated kv heads.
TEST(ReferenceBackward, GqaEqualsSumOverRepeatedHeads) {
  auto gqa = problem(1, 5, 7, 4, 2, 3, 2);
  gqa.causal = true;
  auto mha = gqa;
  mha.heads_k = 4;
  const auto q = flash3_test::random_normal(gqa.q_elems(), 160);
  const auto k = flash3_test::random_normal(gqa.k_elems(), 161);
  const auto v = flash3_test::random_normal(gqa.v_elems(), 162);
  const auto dout = flash3_test::random_normal(gqa.out_elems(), 163);
  std::vector<double> k_rep, v_rep;
  for (int r = 0; r < 7; ++r) {
    for (int h = 0; h < 4; ++h) {
      for (int c = 0; c < 3; ++c) k_rep.push_back(k[(r * 2 + h / 2) * 3 + c]);
      for (int c = 0; c < 2; ++c) v_rep.push_back(v[(r * 2 + h / 2) * 2 + c]);
    }
  }
  std::vector<double> dq1(q.size()), dk1(k.size()), dv1(v.size());
  std::vector<double> dq2(q.size()), dk2(k_rep.size()), dv2(v_rep.size());
  flash3::ref::reference_backward(gqa, q.data(), k.data(), v.data(), dout.data(), dq1.data(), dk1.data(), dv1.data());
  flash3::ref::reference_backward(mha, q.data(), k_rep.data(), v_rep.data(), dout.data(), dq2.data(), dk2.data(),
                                  dv2.data());
  for (size_t i = 0; i < dq1.size(); ++i) EXPECT_NEAR(dq1[i], dq2[i], 1e-13);
  for (int r = 0; r < 7; ++r) {
    for (int g = 0; g < 2; ++g) {
      for (int c = 0; c < 3; ++c) {
        const double sum = dk2[(r * 4 + 2 * g) * 3 + c] + dk2[(r * 4 + 2 * g + 1) * 3 + c];
        EXPECT_NEAR(dk1[(r * 2 + g) * 3 + c], sum, 1e-13);
      }
      for (int c = 0; c < 2; ++c) {
        const double sum = dv2[(r * 4 + 2 * g) * 2 + c] + dv2[(r * 4 + 2 * g + 1) * 2 + c];
        EXPECT_NEAR(dv1[(r * 2 + g) * 2 + c], sum, 1e-13);
      }
    }
  }
}

}  // namespace
