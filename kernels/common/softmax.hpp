// Online softmax over accumulator rows (fp32), with exp2 and the scale folded into one FMA.
//
// Scores are kept unscaled in S; P = exp2(S * scale_log2 - max * scale_log2). The running max and the thread's
// partial row sum live in registers; the sum is reduced across the 4 threads of a quad (the threads that share a row)
// only once, at the end.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>

// Forward experiment bits (see kernels/sm90/tile_config.hpp); 0 in every normal build.
#ifndef FLASH3_FWD_EXP
#define FLASH3_FWD_EXP 0
#endif

namespace flash3 {

CUTLASS_DEVICE float quad_allreduce_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffff, x, 2));
}
CUTLASS_DEVICE float quad_allreduce_sum(float x) {
  x += __shfl_xor_sync(0xffffffff, x, 1);
  return x + __shfl_xor_sync(0xffffffff, x, 2);
}

CUTLASS_DEVICE float fast_exp2(float x) {
  float y;
#if FLASH3_FWD_EXP & 512
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
#else
  asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
#endif
  return y;
}
CUTLASS_DEVICE float fast_tanh(float x) {
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <int kRows>
struct OnlineSoftmax {
  // Lazy rescale: the running max only moves when a block raises it by more than kRescaleSlack (log2 units), so P
  // stays under 2^8 (exact in fp32 sums, same relative rounding in 16-bit P) and most blocks leave every correction
  // at exactly 1, which lets the mainloop skip the O rescale (perf-notes forward row 12: hdim 256 +5-7%).
  static constexpr bool kLazyRescale = (FLASH3_FWD_EXP & 128) == 0;
  static constexpr float kRescaleSlack = 8.f;
  float row_max[kRows];
  float row_sum[kRows];
  float scale_log2;

  CUTLASS_DEVICE explicit OnlineSoftmax(float scale_log2_) : scale_log2(scale_log2_) {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      row_max[r] = -INFINITY;
      row_sum[r] = 0.f;
    }
  }

  // Turns S (rows, cols) into P in place and returns the factor each row's previous O and sum must be scaled by.
  // kIsFirst: no previous block (skips the rescale math).
  template <bool kIsFirst, class TensorS>
  CUTLASS_DEVICE void step(TensorS& s, float (&correction)[kRows]) {
    using namespace cute;
    static_assert(decltype(size<0>(s))::value == kRows);
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      // Four independent partial maxima/sums: a single running value is a dependent chain of kBlockN/2
      // instructions (fmax and fadd are not reassociated by the compiler), which sits on the softmax's critical path.
      constexpr int kCols = decltype(size<1>(s))::value;
      static_assert(kCols % 4 == 0);
      if constexpr ((FLASH3_FWD_EXP & 65536) != 0 && !kIsFirst) {  // DIAGNOSTIC: no max after the first block
        correction[r] = 1.f;
        exp_and_sum(s, r, row_max[r] * scale_log2);
        continue;
      }
      float part[4] = {row_max[r], -INFINITY, -INFINITY, -INFINITY};
      CUTE_UNROLL
      for (int c = 0; c < kCols; ++c) { part[c % 4] = fmaxf(part[c % 4], s(r, c)); }
      float m = fmaxf(fmaxf(part[0], part[1]), fmaxf(part[2], part[3]));
      m = quad_allreduce_max(m);
      float m_scaled;
      if constexpr (kIsFirst) {
        correction[r] = 1.f;
        row_max[r] = m;
        m_scaled = (m == -INFINITY) ? 0.f : m * scale_log2;
      } else if constexpr (kLazyRescale) {
        // NaN (both -inf: the row has seen no key yet) compares false and keeps -inf; a first finite max gives
        // +inf > slack and a correction of exp2(-inf) = 0 on a zero sum.
        if ((m - row_max[r]) * scale_log2 > kRescaleSlack) {
          correction[r] = fast_exp2((row_max[r] - m) * scale_log2);
          row_sum[r] *= correction[r];
          row_max[r] = m;
        } else {
          correction[r] = 1.f;
        }
        m_scaled = (row_max[r] == -INFINITY) ? 0.f : row_max[r] * scale_log2;
      } else {
        // A row that has seen only masked keys keeps max = -inf; use 0 so exp2(-inf - 0) = 0 rather than NaN.
        m_scaled = (m == -INFINITY) ? 0.f : m * scale_log2;
        correction[r] = fast_exp2(row_max[r] * scale_log2 - m_scaled);
        row_sum[r] *= correction[r];
        row_max[r] = m;
      }
      exp_and_sum(s, r, m_scaled);
    }
  }

  // Row r of S becomes P = exp2(S * scale_log2 - m_scaled) in place; its sum goes onto row_sum (four partial sums:
  // see step).
  template <class TensorS>
  CUTLASS_DEVICE void exp_and_sum(TensorS& s, int r, float m_scaled) {
    constexpr int kCols = decltype(cute::size<1>(s))::value;
    float sum[4] = {0.f, 0.f, 0.f, 0.f};
    CUTE_UNROLL
    for (int c = 0; c < kCols; ++c) {
      s(r, c) = fast_exp2(s(r, c) * scale_log2 - m_scaled);
      sum[c % 4] += s(r, c);
    }
    row_sum[r] += (sum[0] + sum[1]) + (sum[2] + sum[3]);
  }

  // Final normalisation: returns 1/sum per row (0 for rows that saw no key) and writes the natural-log LSE
  // (-inf for such rows).
  CUTLASS_DEVICE void finalize(float (&inv_sum)[kRows], float (&lse)[kRows]) {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      float const sum = quad_allreduce_sum(row_sum[r]);
      bool const empty = sum == 0.f || row_max[r] == -INFINITY;
      inv_sum[r] = empty ? 0.f : 1.f / sum;
      lse[r] = empty ? -INFINITY : (row_max[r] * scale_log2 + __log2f(sum)) * float(M_LN2);
    }
  }
};

}  // namespace flash3
