// Tests of the host fp16/bf16 conversions (src/reference/host_float16.hpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "reference/host_float16.hpp"

namespace {

using namespace flash3::ref;

bool is_nan_bits(Precision p, uint16_t b) {
  return p == Precision::kFloat16 ? ((b & 0x7c00u) == 0x7c00u && (b & 0x3ffu) != 0)
                                  : ((b & 0x7f80u) == 0x7f80u && (b & 0x7fu) != 0);
}

TEST(HostFloat16, KnownHalfValues) {
  EXPECT_EQ(float_to_half_bits(1.0f), 0x3c00);
  EXPECT_EQ(float_to_half_bits(-2.0f), 0xc000);
  EXPECT_EQ(float_to_half_bits(0.0f), 0x0000);
  EXPECT_EQ(float_to_half_bits(-0.0f), 0x8000);
  EXPECT_EQ(float_to_half_bits(65504.0f), 0x7bff);                      // largest finite
  EXPECT_EQ(float_to_half_bits(65519.0f), 0x7bff);                      // below the half-way point
  EXPECT_EQ(float_to_half_bits(65520.0f), 0x7c00);                      // the tie rounds to even: infinity
  EXPECT_EQ(float_to_half_bits(std::ldexp(1.0f, -14)), 0x0400);         // smallest normal
  EXPECT_EQ(float_to_half_bits(std::ldexp(1.0f, -24)), 0x0001);         // smallest subnormal
  EXPECT_EQ(float_to_half_bits(std::ldexp(1.0f, -25)), 0x0000);         // tie between 0 and 2^-24: even is 0
  EXPECT_EQ(float_to_half_bits(std::ldexp(3.0f, -25)), 0x0002);         // tie between 1 and 2 units: even is 2
  EXPECT_EQ(float_to_half_bits(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie: stays at 1 (even)
  EXPECT_EQ(float_to_half_bits(1.0f + std::ldexp(3.0f, -11)), 0x3c02);  // tie: goes up to the even mantissa 2
  EXPECT_EQ(float_to_half_bits(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_TRUE(is_nan_bits(Precision::kFloat16, float_to_half_bits(std::nanf(""))));
  EXPECT_FLOAT_EQ(half_bits_to_float(0x3555), 0.333251953125f);
  EXPECT_EQ(half_bits_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(half_bits_to_float(0xfbff), -65504.0f);
}

TEST(HostFloat16, KnownBf16Values) {
  EXPECT_EQ(float_to_bf16_bits(1.0f), 0x3f80);
  EXPECT_EQ(float_to_bf16_bits(-1.5f), 0xbfc0);
  EXPECT_EQ(float_to_bf16_bits(1.0f + std::ldexp(1.0f, -8)), 0x3f80);        // tie to even (down)
  EXPECT_EQ(float_to_bf16_bits(1.0f + std::ldexp(3.0f, -8)), 0x3f82);        // tie to even (up)
  EXPECT_EQ(float_to_bf16_bits(1.0f + std::ldexp(1.0f, -9)), 0x3f80);        // below the tie
  EXPECT_EQ(float_to_bf16_bits(std::numeric_limits<float>::max()), 0x7f80);  // rounds up to infinity
  EXPECT_TRUE(is_nan_bits(Precision::kBFloat16, float_to_bf16_bits(std::nanf(""))));
  EXPECT_EQ(bf16_bits_to_float(0x4049), 3.140625f);
}

// Every 16-bit pattern converts to float and back to itself (NaNs stay NaN).
TEST(HostFloat16, RoundTripEveryPattern) {
  for (Precision p : {Precision::kFloat16, Precision::kBFloat16}) {
    for (uint32_t b = 0; b <= 0xffff; ++b) {
      const uint16_t bits = static_cast<uint16_t>(b);
      const float f = from_bits(p, bits);
      if (is_nan_bits(p, bits)) {
        ASSERT_TRUE(std::isnan(f)) << precision_name(p) << " " << b;
        ASSERT_TRUE(is_nan_bits(p, to_bits(p, f)));
      } else {
        ASSERT_EQ(to_bits(p, f), bits) << precision_name(p) << " pattern " << b << " value " << f;
      }
    }
  }
}

// An independent oracle: the nearest representable value found by binary search over all finite positive values
// of the format (sorted), ties to the even pattern, and overflow to infinity at max + half an ulp.
TEST(HostFloat16, MatchesNearestValueSearch) {
  for (Precision p : {Precision::kFloat16, Precision::kBFloat16}) {
    std::vector<std::pair<double, uint16_t>> values;  // positive finite values incl. zero, ascending
    const uint16_t max_finite = p == Precision::kFloat16 ? 0x7bff : 0x7f7f;
    for (uint32_t b = 0; b <= max_finite; ++b) values.push_back({from_bits(p, static_cast<uint16_t>(b)), b});
    const double max_val = values.back().first;
    const double overflow = max_val + 0.5 * (max_val - values[values.size() - 2].first);
    std::mt19937_64 gen(1234);
    std::uniform_int_distribution<uint32_t> any_bits;
    for (int n = 0; n < 400000; ++n) {
      uint32_t x = any_bits(gen);
      // Favour the interesting ranges: force exponents near the format's subnormal and overflow edges, and exact
      // ties (the dropped bits equal to 100...0).
      if (n % 4 == 1) x = (x & 0x807fffffu) | ((100u + (x >> 24) % 45u) << 23);
      if (n % 4 == 2) x = (x & 0xffff0000u) | 0x8000u;
      if (n % 4 == 3) x = (x & 0xffffe000u) | 0x1000u;
      const float f = bits_float(x);
      if (std::isnan(f)) continue;
      const double a = std::fabs(static_cast<double>(f));
      uint16_t expect;
      if (a >= overflow) {
        expect = p == Precision::kFloat16 ? 0x7c00 : 0x7f80;
      } else {
        auto it = std::lower_bound(values.begin(), values.end(), std::make_pair(a, uint16_t{0}));
        if (it == values.end()) it = values.end() - 1;  // between max and the overflow point
        if (it->first == a) {
          expect = it->second;
        } else {
          const auto hi = *it, lo = *(it - 1);
          const double dlo = a - lo.first, dhi = hi.first - a;
          expect = dlo < dhi ? lo.second : dhi < dlo ? hi.second : ((lo.second & 1) ? hi.second : lo.second);
        }
      }
      if (std::signbit(f)) expect |= 0x8000;
      ASSERT_EQ(to_bits(p, f), expect) << precision_name(p) << " float bits 0x" << std::hex << x;
    }
  }
}

#if defined(__FLT16_MAX__)
// Where the compiler has _Float16 (IEEE binary16 with hardware or soft-float conversions), agree with it.
TEST(HostFloat16, MatchesCompilerFloat16) {
  std::mt19937_64 gen(99);
  std::uniform_int_distribution<uint32_t> any_bits;
  for (int n = 0; n < 200000; ++n) {
    const float f = bits_float(any_bits(gen));
    if (std::isnan(f)) continue;
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t bits;
    std::memcpy(&bits, &h, sizeof(bits));
    ASSERT_EQ(float_to_half_bits(f), bits) << f;
  }
}
#endif

}  // namespace
