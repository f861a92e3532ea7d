// Online softmax over accumulator rows (fp32), with exp2 and the scale folded into one FMA.
//
// Scores are kept unscaled in S; P = exp2(S * scale_log2 - offset * scale_log2). The offset (row_max) and the
// thread's partial row sum live in registers; the sum is reduced across the 4 threads of a quad (the threads that
// share a row) only once, at the end.
//
// Two ways to choose the offset:
//   exact:        the running row max (lazily raised, see kRescaleSlack), i.e. a max over every block's scores;
//   fixed offset: the row max of the first block the row sees, kept for the rest of the tile. No later block
//                 computes a max: its exps start as soon as S is ready (the max's FMNMX tree and quad shuffles headed
//                 each block's critical path; perf-notes forward row 27). A block whose P would be large is caught
//                 afterwards, from its partial sums, and rebased (rebase_block); a row whose P overflowed fp32 (a
//                 score > ~120 log2 units above the offset) ends with a non-finite sum, and finalize reports it so
//                 the launcher's repair pass can recompute the call exactly (kernels/sm90/fwd_kernel_sm90.hpp).
#pragma once

#include <cfloat>

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

// kFixedOffsets: compile the fixed-offset path too (chosen per launch: allow_fixed_offsets).
template <int kRows, bool kFixedOffsets = false>
struct OnlineSoftmax {
  // Lazy rescale: the running max only moves when a block raises it by more than kRescaleSlack (log2 units), so P
  // stays under 2^8 (exact in fp32 sums, same relative rounding in 16-bit P) and most blocks leave every correction
  // at exactly 1, which lets the mainloop skip the O rescale (perf-notes forward row 12: hdim 256 +5-7%).
  static constexpr bool kLazyRescale = (FLASH3_FWD_EXP & 128) == 0;
  static constexpr float kRescaleSlack = 8.f;
  // Fixed offsets: a block is rebased when a thread's partial sum of its P exceeds this, so every P stays under
  // 2^8 as in the exact path (fp16 P cannot overflow, and O's accumulation has the exact path's headroom).
  static constexpr float kFixedOffsetSumLimit = 256.f;
  float row_max[kRows];  // the offset (raw score units); -inf until the row has seen a key
  float row_sum[kRows];
  float scale_log2;
  // Warp-uniform: every row of the warp has a finite offset and the launch allows fixed offsets, so later blocks
  // skip the max. Until then (rows whose first blocks were fully masked) the exact step runs.
  bool offsets_fixed = false;
  bool allow_fixed_offsets;

  CUTLASS_DEVICE explicit OnlineSoftmax(float scale_log2_, bool allow_fixed_offsets_ = false)
      : scale_log2(scale_log2_), allow_fixed_offsets(kFixedOffsets && allow_fixed_offsets_) {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      row_max[r] = -INFINITY;
      row_sum[r] = 0.f;
    }
  }

  // Turns S (rows, cols) into P in place and sets the factor each row's previous O and sum must be scaled by.
  // Returns whether any factor of the warp may differ from 1 (warp-uniform; false lets the caller skip the O
  // rescale). kIsFirst: no previous block (skips the rescale math).
  template <bool kIsFirst, class TensorS>
  CUTLASS_DEVICE bool step(TensorS& s, float (&correction)[kRows]) {
    using namespace cute;
    static_assert(decltype(size<0>(s))::value == kRows);
    if constexpr (kFixedOffsets && !kIsFirst) {
      if (offsets_fixed) { return step_fixed_offset(s, correction); }
    }
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      // Four independent partial maxima/sums: a single running value is a dependent chain of kBlockN/2
      // instructions (fmax and fadd are not reassociated by the compiler), which sits on the softmax's critical path.
      constexpr int kCols = decltype(size<1>(s))::value;
      static_assert(kCols % 4 == 0);
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
      row_sum[r] += exp_block(s, r, m_scaled);
    }
    if constexpr (kFixedOffsets) {
      if (allow_fixed_offsets) {  // launch-uniform: exact launches skip the vote
        bool finite = true;
        CUTE_UNROLL
        for (int r = 0; r < kRows; ++r) { finite &= row_max[r] != -INFINITY; }
        offsets_fixed = __all_sync(0xffffffffu, finite);
      }
    }
    if constexpr (kIsFirst) {
      return false;
    } else if constexpr (kLazyRescale) {
      // A lane's multiply costs the warp the same whether or not the others need one.
      bool need = false;
      CUTE_UNROLL
      for (int r = 0; r < kRows; ++r) { need |= correction[r] != 1.f; }
      return __any_sync(0xffffffffu, need);
    } else {
      return true;
    }
  }

  // A block with the offsets fixed: P = exp2(S * scale_log2 - offset) straight away. The block's partial sums bound
  // its P; only when one exceeds kFixedOffsetSumLimit (a score well above the offset; rare) is the block rebased.
  template <class TensorS>
  CUTLASS_DEVICE bool step_fixed_offset(TensorS& s, float (&correction)[kRows]) {
    float block_sum[kRows];
    bool large = false;
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      block_sum[r] = exp_block(s, r, row_max[r] * scale_log2);
      large |= !(block_sum[r] <= kFixedOffsetSumLimit);  // NaN counts as large
    }
    if (__any_sync(0xffffffffu, large)) {
      rebase_block(s, block_sum, correction);
      return true;
    }
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      correction[r] = 1.f;
      row_sum[r] += block_sum[r];
    }
    return false;
  }

  // The rare path of step_fixed_offset: a row whose block P sum to more than the limit (over its quad) raises its
  // offset by k = ceil(log2(sum)), so the block's P, now scaled by 2^-k, sum to at most 1; O and the earlier sum
  // take the same factor (correction). Power-of-two factors are exact. A sum too large to rebase (P overflowed
  // fp32, or k would leave the normal range) poisons the row's sum with NaN: finalize reports it.
  template <class TensorS>
  CUTLASS_DEVICE void rebase_block(TensorS& s, float const (&block_sum)[kRows], float (&correction)[kRows]) {
    constexpr int kCols = decltype(cute::size<1>(s))::value;
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      float const total = quad_allreduce_sum(block_sum[r]);
      correction[r] = 1.f;
      // DIAGNOSTIC bit 131072 (a check of the tests): no rebase, so fp16 P overflow past +16 log2 units.
      if (total <= kFixedOffsetSumLimit || (FLASH3_FWD_EXP & 131072) != 0) {
        row_sum[r] += block_sum[r];
        continue;
      }
      if (!(total < 0x1p100f)) {
        row_sum[r] = NAN;
        continue;
      }
      float const k = ceilf(__log2f(total));
      float const factor = __int_as_float((127 - int(k)) << 23);  // 2^-k
      CUTE_UNROLL
      for (int c = 0; c < kCols; ++c) { s(r, c) *= factor; }
      row_sum[r] = (row_sum[r] + block_sum[r]) * factor;
      row_max[r] += k / scale_log2;
      correction[r] = factor;
    }
  }

  // Row r of S becomes P = exp2(S * scale_log2 - m_scaled) in place; returns the thread's sum of them (four partial
  // sums: see step).
  template <class TensorS>
  CUTLASS_DEVICE float exp_block(TensorS& s, int r, float m_scaled) {
    constexpr int kCols = decltype(cute::size<1>(s))::value;
    float sum[4] = {0.f, 0.f, 0.f, 0.f};
    CUTE_UNROLL
    for (int c = 0; c < kCols; ++c) {
      s(r, c) = fast_exp2(s(r, c) * scale_log2 - m_scaled);
      sum[c % 4] += s(r, c);
    }
    return (sum[0] + sum[1]) + (sum[2] + sum[3]);
  }

  // Final normalisation: returns 1/sum per row (0 for rows that saw no key) and writes the natural-log LSE
  // (-inf for such rows). Returns whether a row's sum is not finite: with fixed offsets that is an overflow the
  // exact path would not have had (or a NaN / inf input, which the exact path reproduces).
  CUTLASS_DEVICE bool finalize(float (&inv_sum)[kRows], float (&lse)[kRows]) {
    bool overflow = false;
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      float const sum = quad_allreduce_sum(row_sum[r]);
      overflow |= !(sum <= FLT_MAX);
      bool const empty = sum == 0.f || row_max[r] == -INFINITY;
      inv_sum[r] = empty ? 0.f : 1.f / sum;
      lse[r] = empty ? -INFINITY : (row_max[r] * scale_log2 + __log2f(sum)) * float(M_LN2);
    }
    return overflow;
  }
};

}  // namespace flash3
