// Incoherent processing (FA3 paper, sec. 3.3): rows of Q and K are multiplied by M = H diag(s) / sqrt(d), H the
// d x d Walsh-Hadamard matrix and s random signs from a seed. M is orthogonal, so (q M^T)(k M^T)^T = q k^T, while an
// outlier in one coordinate is spread over all d of them before quantisation.
//
// A group of kLanes lanes transforms one row held in registers: lane l of the group holds the kPerLane consecutive
// elements l * kPerLane + j. The fast transform's log2(kPerLane) low stages are butterflies inside a thread, the
// log2(kLanes) high ones exchange with lane ^ m through shuffles: O(d log d) work, no shared memory.
#pragma once

#include <cstdint>

#include <cutlass/cutlass.h>

namespace flash3 {

// Sign (+1 / -1) of coordinate i for a seed: one splitmix64 step, so signs are reproducible from (seed, i) alone and
// independent of how the work is split.
CUTLASS_HOST_DEVICE float hadamard_sign(uint64_t seed, int i) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (uint64_t(i) + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (z & 1) ? -1.f : 1.f;
}

// In-place normalised Walsh-Hadamard transform of one row spread over kLanes consecutive lanes (a power of two up
// to 32, aligned to kLanes in the warp) with kPerLane elements each; x already carries the signs. Element order is
// natural (index = (lane % kLanes) * kPerLane + j), so the result is H x / sqrt(d) exactly, d = kLanes * kPerLane.
template <int kPerLane, int kLanes = 32>
CUTLASS_DEVICE void warp_hadamard(float (&x)[kPerLane], int lane) {
  static_assert((kPerLane & (kPerLane - 1)) == 0 && (kLanes & (kLanes - 1)) == 0 && kLanes <= 32, "powers of two");
  CUTLASS_PRAGMA_UNROLL
  for (int h = 1; h < kPerLane; h *= 2) {
    CUTLASS_PRAGMA_UNROLL
    for (int j = 0; j < kPerLane; ++j) {
      if ((j & h) == 0) {
        float const a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
  CUTLASS_PRAGMA_UNROLL
  for (int m = 1; m < kLanes; m *= 2) {
    bool const upper = (lane & m) != 0;
    CUTLASS_PRAGMA_UNROLL
    for (int j = 0; j < kPerLane; ++j) {
      float const other = __shfl_xor_sync(0xffffffff, x[j], m);
      x[j] = upper ? other - x[j] : x[j] + other;
    }
  }
  float const norm = rsqrtf(float(kLanes * kPerLane));
  CUTLASS_PRAGMA_UNROLL
  for (int j = 0; j < kPerLane; ++j) { x[j] *= norm; }
}

}  // namespace flash3
