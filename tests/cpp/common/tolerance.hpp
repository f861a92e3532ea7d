// The accuracy oracle of every GPU test: FA3's tolerance rule.
//
//   max |out - ref_fp64|  <=  2 * max |out_lowprec_naive - ref_fp64|  +  fp32 noise
//   fp32 noise = kNoiseAbs + kNoiseRel * max |ref_fp64|
//
// ref_fp64 is the double reference; out_lowprec_naive is the naive attention computed in the input precision
// (ref::reference_forward_lowprec, or the naive GPU kernel's low-precision mode). A kernel may therefore be at most
// twice as inaccurate as the naive PyTorch-style implementation, plus a floor for the cases where the naive one is
// exact (e.g. a single visible key) and the kernel's fp32 arithmetic still leaves a last-bit difference.
// The floor: 1e-5 absolute, and 4 fp32 epsilons (4 * 2^-23, about 4.8e-7) of the largest reference magnitude.
//
// Any NaN or infinity in `out` fails the check (outputs are poisoned with NaN before each run, so an element the
// kernel forgot to write shows up here).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "reference/reference_attention.hpp"

namespace flash3_test {

constexpr double kNoiseAbs = 1e-5;
constexpr double kNoiseRel = 4.0 * 1.1920928955078125e-07;  // 4 * FLT_EPSILON
// LSE is fp32 and does not go through a low-precision matmul output, so it gets a plain tolerance:
// |lse - ref| <= kLseTol * max(1, |ref|); rows whose reference is -inf (nothing visible) must be -inf exactly.
constexpr double kLseTol = 1e-3;

// Names an element for failure messages, e.g. "out[b=1, i=17, h=3, c=5]".
using Locator = std::function<std::string(int64_t)>;

// The FA3 rule over the elements where valid[i] != 0 (all when `valid` is null).
::testing::AssertionResult fa3_close(const std::string& what, const std::vector<double>& out,
                                     const std::vector<double>& ref, const std::vector<double>& lowprec,
                                     const std::vector<char>* valid = nullptr, const Locator& locate = {});

// The LSE check described above.
::testing::AssertionResult lse_close(const std::string& what, const std::vector<double>& lse,
                                     const std::vector<double>& ref, const std::vector<char>* valid = nullptr,
                                     const Locator& locate = {}, double tol = kLseTol);

// Which elements of out (rows_q x heads x dv) and lse a problem writes: the used rows of every sequence.
std::vector<char> used_out_mask(const flash3::ref::ReferenceProblem& p);
std::vector<char> used_lse_mask(const flash3::ref::ReferenceProblem& p);

// Locators for out and lse of a problem's contiguous layouts.
Locator out_locator(const flash3::ref::ReferenceProblem& p);
Locator lse_locator(const flash3::ref::ReferenceProblem& p);

}  // namespace flash3_test
