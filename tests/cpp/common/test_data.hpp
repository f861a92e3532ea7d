// Deterministic random test data (host only, no CUDA): normal values that are never zero, optionally rounded to
// fp16/bf16, and conversions between double vectors and raw 16-bit patterns.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "reference/host_float16.hpp"

namespace flash3_test {

using flash3::ref::Precision;

// A stable 64-bit seed from a case name (FNV-1a), so every test case has its own fixed inputs.
inline uint64_t seed_from(const std::string& name) {
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : name) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

// n draws of Normal(0, stddev), none of them zero (a zero would hide a missing product).
inline std::vector<double> random_normal(int64_t n, uint64_t seed, double stddev = 1.0) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<double> out(static_cast<size_t>(n));
  for (auto& x : out) {
    do {
      x = dist(gen);
    } while (x == 0.0);
  }
  return out;
}

// As above, each value rounded to `precision` (and redrawn if it rounds to zero), so the values are exactly what a
// fp16/bf16 device tensor holds.
inline std::vector<double> random_normal(int64_t n, Precision precision, uint64_t seed, double stddev = 1.0) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<double> out(static_cast<size_t>(n));
  for (auto& x : out) {
    do {
      x = flash3::ref::round_to(precision, static_cast<float>(dist(gen)));
    } while (x == 0.0);
  }
  return out;
}

inline std::vector<uint16_t> to_bits(const std::vector<double>& values, Precision precision) {
  std::vector<uint16_t> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i) bits[i] = flash3::ref::to_bits(precision, static_cast<float>(values[i]));
  return bits;
}

inline std::vector<double> from_bits(const std::vector<uint16_t>& bits, Precision precision) {
  std::vector<double> values(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) values[i] = flash3::ref::from_bits(precision, bits[i]);
  return values;
}

}  // namespace flash3_test
