// The case vocabulary the forward and backward GPU tests share: mask kinds, GQA ratios, softcap settings, and how
// each one is written into a reference problem.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "reference/reference_attention.hpp"

namespace flash3_test {

enum class Mask { kNone, kCausal, kWindow, kCausalWindow };
enum class Gqa { kMha, kGqa4, kMqa };

inline const char* mask_name(Mask m) {
  switch (m) {
    case Mask::kNone: return "nomask";
    case Mask::kCausal: return "causal";
    case Mask::kWindow: return "window37x11";
    case Mask::kCausalWindow: return "causal_left64";
  }
  return "?";
}

inline const char* gqa_name(Gqa g) {
  switch (g) {
    case Gqa::kMha: return "mha";
    case Gqa::kGqa4: return "gqa4";
    case Gqa::kMqa: return "mqa";
  }
  return "?";
}

inline void set_mask(flash3::ref::ReferenceProblem* p, Mask m) {
  p->causal = m == Mask::kCausal || m == Mask::kCausalWindow;
  p->window_left = m == Mask::kWindow ? 37 : m == Mask::kCausalWindow ? 64 : -1;
  p->window_right = m == Mask::kWindow ? 11 : -1;
}

// Odd head counts on purpose; GQA4 has two groups, MQA one kv head for five query heads.
inline void set_heads(flash3::ref::ReferenceProblem* p, Gqa g) {
  p->heads = g == Gqa::kMha ? 3 : g == Gqa::kGqa4 ? 8 : 5;
  p->heads_k = g == Gqa::kMha ? 3 : g == Gqa::kGqa4 ? 2 : 1;
}

// Softcap 30 with the default scale would leave tanh nearly linear on unit-normal inputs (scores of a few units);
// a larger explicit scale pushes scores to ~10, where a missing or wrong tanh (or tanh derivative) changes the result
// by far more than the tolerance. The scale is a float so that kernel and reference use the very same value.
inline void set_softcap(flash3::ref::ReferenceProblem* p, bool on) {
  p->softcap = on ? 30.0 : 0.0;
  p->softmax_scale = on ? static_cast<double>(static_cast<float>(2.5 / std::sqrt(static_cast<double>(p->head_dim))))
                        : 0.0;  // 0: the default 1/sqrt(d) on both sides
}

// The longest sequence of a cu_seqlens array (varlen's max_seqlen).
inline int max_len(const std::vector<int>& cu) {
  int m = 0;
  for (size_t i = 0; i + 1 < cu.size(); ++i) m = std::max(m, cu[i + 1] - cu[i]);
  return m;
}

}  // namespace flash3_test
