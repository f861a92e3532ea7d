// Host-side conversions between float and the 16-bit float formats (IEEE fp16 and bfloat16), round to nearest even.
// Header-only and free of CUDA headers, so CPU tests and the reference can round values exactly as the GPU stores
// them. Values travel as raw 16-bit patterns (uint16_t); uploading such a vector gives a valid __half/__nv_bfloat16
// device array.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace flash3 {
namespace ref {

// The low-precision element types of the reference's emulation (and of the tests' inputs).
enum class Precision { kFloat16, kBFloat16 };

inline const char* precision_name(Precision p) { return p == Precision::kFloat16 ? "fp16" : "bf16"; }

inline uint32_t float_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof(x));
  return x;
}

inline float bits_float(uint32_t x) {
  float f;
  std::memcpy(&f, &x, sizeof(f));
  return f;
}

// ---- IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits -------------------------------------------------
inline uint16_t float_to_half_bits(float f) {
  const uint32_t x = float_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t absx = x & 0x7fffffffu;
  if (absx > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN stays a (quiet) NaN
  // 65520 = 65504 + half an ulp: it and everything above round to infinity (65504's mantissa is odd, so the tie
  // goes up too).
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (absx < 0x38800000u) {
    // Below 2^-14: the result is a subnormal half (or zero) counted in units of 2^-24. Scaling by 2^24 is exact in
    // float (the result is < 2^10), and rounding the integer part by hand keeps the mode round-to-nearest-even
    // whatever the FPU's rounding mode is.
    const float scaled = bits_float(absx) * 16777216.0f;
    uint32_t m = static_cast<uint32_t>(scaled);         // truncation
    const float rest = scaled - static_cast<float>(m);  // exact: scaled has at most 24 significant bits
    if (rest > 0.5f || (rest == 0.5f && (m & 1u))) ++m;
    return static_cast<uint16_t>(sign | m);  // m == 0x400 encodes the smallest normal, as it should
  }
  // Normal range: rebias the exponent and round the 13 dropped mantissa bits. A carry out of the mantissa correctly
  // bumps the exponent; the overflow threshold above keeps it below infinity.
  const uint32_t exponent = ((absx >> 23) - 127u + 15u);
  const uint32_t mantissa = absx & 0x7fffffu;
  uint32_t h = (exponent << 10) | (mantissa >> 13);
  const uint32_t dropped = mantissa & 0x1fffu;
  if (dropped > 0x1000u || (dropped == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float.
    const float magnitude = static_cast<float>(mantissa) * (1.0f / 16777216.0f);
    return (sign ? -magnitude : magnitude);
  }
  if (exponent == 31) return bits_float(sign | 0x7f800000u | (mantissa << 13));  // inf / NaN
  return bits_float(sign | ((exponent - 15u + 127u) << 23) | (mantissa << 13));
}

// ---- bfloat16: the upper 16 bits of a float ---------------------------------------------------------------------
inline uint16_t float_to_bf16_bits(float f) {
  uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // keep NaN a NaN
  // Round to nearest even: add 0x7fff plus the lowest kept bit, then truncate. Overflow carries into infinity.
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

inline float bf16_bits_to_float(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

// ---- by precision -------------------------------------------------------------------------------------------------
inline uint16_t to_bits(Precision p, float f) {
  return p == Precision::kFloat16 ? float_to_half_bits(f) : float_to_bf16_bits(f);
}

inline float from_bits(Precision p, uint16_t b) {
  return p == Precision::kFloat16 ? half_bits_to_float(b) : bf16_bits_to_float(b);
}

// The float nearest to f that the precision can represent (round to nearest even).
inline float round_to(Precision p, float f) { return from_bits(p, to_bits(p, f)); }

// Unit roundoff of the precision (half an ulp of 1): 2^-11 for fp16, 2^-8 for bf16.
inline double unit_roundoff(Precision p) { return p == Precision::kFloat16 ? 1.0 / 2048.0 : 1.0 / 256.0; }

}  // namespace ref
}  // namespace flash3
