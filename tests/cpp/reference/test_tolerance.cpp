// The tolerance rule helpers (tests/cpp/common/tolerance.hpp) must pass what they should and fail what they should.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "common/tolerance.hpp"

namespace {

using flash3_test::fa3_close;
using flash3_test::lse_close;

TEST(ToleranceRule, WithinTwiceTheLowprecError) {
  const std::vector<double> ref = {1.0, -0.5, 0.25, 2.0};
  const std::vector<double> low = {1.01, -0.5, 0.25, 2.0};  // naive error 0.01
  EXPECT_TRUE(fa3_close("out", {1.019, -0.51, 0.24, 2.0}, ref, low));
  EXPECT_FALSE(fa3_close("out", {1.0, -0.5, 0.25, 2.021}, ref, low));  // 0.021 > 2 * 0.01 + noise
}

TEST(ToleranceRule, NoiseFloorWhenTheNaiveIsExact) {
  const std::vector<double> ref = {1.0, 2.0};
  EXPECT_TRUE(fa3_close("out", {1.0 + 5e-6, 2.0}, ref, ref));
  EXPECT_FALSE(fa3_close("out", {1.0 + 5e-5, 2.0}, ref, ref));
}

TEST(ToleranceRule, NanFailsAndMessageNamesTheElement) {
  const std::vector<double> ref = {1.0, 2.0, 3.0};
  const auto r = fa3_close("out", {1.0, std::nan(""), 3.0}, ref, ref, nullptr,
                           [](int64_t i) { return "elem" + std::to_string(i); });
  EXPECT_FALSE(r);
  EXPECT_NE(std::string(r.message()).find("elem1"), std::string::npos) << r.message();
  const auto r2 =
      fa3_close("out", {1.0, 2.0, 3.1}, ref, ref, nullptr, [](int64_t i) { return "elem" + std::to_string(i); });
  EXPECT_FALSE(r2);
  EXPECT_NE(std::string(r2.message()).find("elem2"), std::string::npos) << r2.message();
}

TEST(ToleranceRule, MaskSkipsUnusedElements) {
  const std::vector<double> ref = {1.0, 2.0};
  const std::vector<char> valid = {1, 0};
  EXPECT_TRUE(fa3_close("out", {1.0, std::nan("")}, ref, ref, &valid));
  EXPECT_FALSE(fa3_close("out", {1.0, std::nan("")}, ref, ref));
}

TEST(ToleranceRule, LseInfinitiesAndRelativeTolerance) {
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_TRUE(lse_close("lse", {-inf, 10.005, 0.0005}, {-inf, 10.0, 0.0}));
  EXPECT_FALSE(lse_close("lse", {-inf, 10.02, 0.0}, {-inf, 10.0, 0.0}));
  EXPECT_FALSE(lse_close("lse", {-50.0, 10.0}, {-inf, 10.0}));  // a masked row must be -inf exactly
  EXPECT_FALSE(lse_close("lse", {inf, 10.0}, {-inf, 10.0}));
  EXPECT_FALSE(lse_close("lse", {-inf, 10.0}, {3.0, 10.0}));
  EXPECT_FALSE(lse_close("lse", {std::nan(""), 10.0}, {3.0, 10.0}));
}

TEST(ToleranceRule, UsedMasksFollowSeqused) {
  flash3::ref::ReferenceProblem p;
  p.batch = 2;
  p.heads = 2;
  p.heads_k = 1;
  p.head_dim = 4;
  p.head_dim_v = 3;
  p.cu_seqlens_q = {0, 3, 5};
  p.cu_seqlens_k = {0, 2, 6};
  p.seqused_q = {1, 2};
  const auto out_mask = flash3_test::used_out_mask(p);
  const auto lse_mask = flash3_test::used_lse_mask(p);
  ASSERT_EQ(out_mask.size(), 5u * 2 * 3);
  ASSERT_EQ(lse_mask.size(), 2u * 5);
  // Rows 0, 3, 4 are used; rows 1 and 2 (beyond seqused_q of sequence 0) are not.
  for (int row = 0; row < 5; ++row) {
    const char used = (row == 0 || row == 3 || row == 4);
    for (int e = 0; e < 6; ++e) EXPECT_EQ(out_mask[row * 6 + e], used) << row;
    for (int h = 0; h < 2; ++h) EXPECT_EQ(lse_mask[h * 5 + row], used) << row;
  }
}

}  // namespace
