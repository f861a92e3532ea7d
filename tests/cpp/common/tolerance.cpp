#include "common/tolerance.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace flash3_test {

using flash3::ref::ReferenceProblem;

namespace {

std::string locate_or_index(const Locator& locate, int64_t i) {
  if (locate) return locate(i);
  return "[" + std::to_string(i) + "]";
}

// (sequence, row in sequence) of a q-side row, or (-1, -1) when no sequence owns it.
void row_owner(const ReferenceProblem& p, int64_t row, int* b_out, int* i_out) {
  for (int b = 0; b < p.batch; ++b) {
    const ReferenceProblem::Sequence s = p.sequence(b);
    const int64_t len = p.varlen_q() ? p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b] : p.seqlen_q;
    if (row >= s.q_row0 && row < s.q_row0 + len) {
      *b_out = b;
      *i_out = static_cast<int>(row - s.q_row0);
      return;
    }
  }
  *b_out = -1;
  *i_out = -1;
}

}  // namespace

::testing::AssertionResult fa3_close(const std::string& what, const std::vector<double>& out,
                                     const std::vector<double>& ref, const std::vector<double>& lowprec,
                                     const std::vector<char>* valid, const Locator& locate) {
  if (out.size() != ref.size() || lowprec.size() != ref.size() || (valid && valid->size() != ref.size())) {
    return ::testing::AssertionFailure() << what << ": size mismatch (out " << out.size() << ", ref " << ref.size()
                                         << ", lowprec " << lowprec.size() << ")";
  }
  double max_err = 0.0, max_low_err = 0.0, max_ref = 0.0;
  int64_t worst = -1, worst_low = -1, first_bad = -1, checked = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (valid && !(*valid)[i]) continue;
    ++checked;
    if (!std::isfinite(out[i])) {
      if (first_bad < 0) first_bad = static_cast<int64_t>(i);
      continue;
    }
    const double err = std::fabs(out[i] - ref[i]);
    const double low_err = std::fabs(lowprec[i] - ref[i]);
    if (worst < 0 || err > max_err) {
      max_err = err;
      worst = static_cast<int64_t>(i);
    }
    if (low_err > max_low_err) {
      max_low_err = low_err;
      worst_low = static_cast<int64_t>(i);
    }
    max_ref = std::max(max_ref, std::fabs(ref[i]));
  }
  if (first_bad >= 0) {
    return ::testing::AssertionFailure() << what << ": non-finite output " << out[first_bad] << " at "
                                         << locate_or_index(locate, first_bad) << " (reference " << ref[first_bad]
                                         << "); a NaN usually means an element was never written";
  }
  const double bound = 2.0 * max_low_err + kNoiseAbs + kNoiseRel * max_ref;
  std::ostringstream msg;
  msg.precision(6);
  msg << what << ": max|out-ref| = " << max_err;
  if (worst >= 0) {
    msg << " at " << locate_or_index(locate, worst) << " (out " << out[worst] << ", ref " << ref[worst] << ", lowprec "
        << lowprec[worst] << ")";
  }
  msg << "; bound = 2 * " << max_low_err << " (max|lowprec-ref|";
  if (worst_low >= 0) msg << " at " << locate_or_index(locate, worst_low);
  msg << ") + " << kNoiseAbs << " + " << kNoiseRel << " * " << max_ref << " = " << bound << "; " << checked
      << " elements checked";
  if (max_err <= bound) return ::testing::AssertionSuccess() << msg.str();
  return ::testing::AssertionFailure() << msg.str();
}

::testing::AssertionResult lse_close(const std::string& what, const std::vector<double>& lse,
                                     const std::vector<double>& ref, const std::vector<char>* valid,
                                     const Locator& locate, double tol) {
  if (lse.size() != ref.size() || (valid && valid->size() != ref.size())) {
    return ::testing::AssertionFailure() << what << ": size mismatch (lse " << lse.size() << ", ref " << ref.size()
                                         << ")";
  }
  double worst_ratio = 0.0;
  int64_t worst = -1, checked = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (valid && !(*valid)[i]) continue;
    ++checked;
    const bool ref_empty = std::isinf(ref[i]) && ref[i] < 0;
    if (ref_empty || !std::isfinite(lse[i])) {
      if (ref_empty && std::isinf(lse[i]) && lse[i] < 0) continue;
      return ::testing::AssertionFailure()
             << what << ": at " << locate_or_index(locate, static_cast<int64_t>(i)) << " lse = " << lse[i]
             << ", reference = " << ref[i] << " (a row that sees no key must be -inf, every other row finite)";
    }
    const double ratio = std::fabs(lse[i] - ref[i]) / (tol * std::max(1.0, std::fabs(ref[i])));
    if (worst < 0 || ratio > worst_ratio) {
      worst_ratio = ratio;
      worst = static_cast<int64_t>(i);
    }
  }
  std::ostringstream msg;
  msg.precision(8);
  msg << what << ": worst |lse-ref| / (" << tol << " * max(1,|ref|)) = " << worst_ratio;
  if (worst >= 0)
    msg << " at " << locate_or_index(locate, worst) << " (lse " << lse[worst] << ", ref " << ref[worst] << ")";
  msg << "; " << checked << " elements checked";
  if (worst_ratio <= 1.0) return ::testing::AssertionSuccess() << msg.str();
  return ::testing::AssertionFailure() << msg.str();
}

std::vector<char> used_out_mask(const ReferenceProblem& p) {
  std::vector<char> mask(static_cast<size_t>(p.out_elems()), 0);
  const int64_t row_elems = static_cast<int64_t>(p.heads) * p.dv();
  for (int b = 0; b < p.batch; ++b) {
    const ReferenceProblem::Sequence s = p.sequence(b);
    std::fill(mask.begin() + s.q_row0 * row_elems, mask.begin() + (s.q_row0 + s.sq) * row_elems, 1);
  }
  return mask;
}

std::vector<char> used_lse_mask(const ReferenceProblem& p) {
  std::vector<char> mask(static_cast<size_t>(p.lse_elems()), 0);
  for (int b = 0; b < p.batch; ++b) {
    const ReferenceProblem::Sequence s = p.sequence(b);
    for (int hq = 0; hq < p.heads; ++hq) {
      for (int i = 0; i < s.sq; ++i) mask[static_cast<size_t>(p.lse_index(b, hq, i))] = 1;
    }
  }
  return mask;
}

Locator out_locator(const ReferenceProblem& p) {
  return [p](int64_t idx) {
    const int dv = p.dv();
    const int64_t row = idx / (static_cast<int64_t>(p.heads) * dv);
    const int hq = static_cast<int>((idx / dv) % p.heads);
    const int c = static_cast<int>(idx % dv);
    int b, i;
    row_owner(p, row, &b, &i);
    std::ostringstream os;
    os << "out[row " << row << " = (b=" << b << ", i=" << i << "), h=" << hq << ", c=" << c << "]";
    return os.str();
  };
}

Locator lse_locator(const ReferenceProblem& p) {
  return [p](int64_t idx) {
    std::ostringstream os;
    if (p.varlen_q()) {
      const int64_t tq = p.rows_q();
      const int hq = static_cast<int>(idx / std::max<int64_t>(tq, 1));
      const int64_t row = idx % std::max<int64_t>(tq, 1);
      int b, i;
      row_owner(p, row, &b, &i);
      os << "lse[h=" << hq << ", row " << row << " = (b=" << b << ", i=" << i << ")]";
    } else {
      const int64_t sq = std::max(p.seqlen_q, 1);
      os << "lse[b=" << idx / (sq * p.heads) << ", h=" << (idx / sq) % p.heads << ", i=" << idx % sq << "]";
    }
    return os.str();
  };
}

}  // namespace flash3_test
