// The CPU reference of attention (see reference_attention.hpp for the semantics and layouts).
#include "reference/reference_attention.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace flash3 {
namespace ref {

namespace {

// Runs f(0), ..., f(n - 1), over several threads when the work is worth it. Items must be independent; each item
// is computed by one thread in a fixed order, so the results never depend on the thread count.
template <class F>
void parallel_for(int64_t n, double flops, F&& f) {
  int64_t threads = static_cast<int64_t>(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::min<int64_t>(threads, n);
  if (flops < 4e6) threads = 1;  // thread start-up would cost more than the work
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::atomic<int64_t> next{0};
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads));
  for (int64_t t = 0; t < threads; ++t) {
    pool.emplace_back([&]() {
      for (int64_t i = next++; i < n; i = next++) f(i);
    });
  }
  for (auto& th : pool) th.join();
}

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("ReferenceProblem: " + what);
}

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

}  // namespace

// ---- ReferenceProblem --------------------------------------------------------------------------------------------

double ReferenceProblem::scale() const {
  return softmax_scale > 0.0 ? softmax_scale : 1.0 / std::sqrt(static_cast<double>(head_dim));
}

int64_t ReferenceProblem::rows_q() const {
  return varlen_q() ? static_cast<int64_t>(cu_seqlens_q.back()) : static_cast<int64_t>(batch) * seqlen_q;
}

int64_t ReferenceProblem::rows_k() const {
  return varlen_k() ? static_cast<int64_t>(cu_seqlens_k.back()) : static_cast<int64_t>(batch) * seqlen_k;
}

ReferenceProblem::Sequence ReferenceProblem::sequence(int b) const {
  Sequence s{};
  int len_q, len_k;
  if (varlen_q()) {
    s.q_row0 = cu_seqlens_q[b];
    len_q = cu_seqlens_q[b + 1] - cu_seqlens_q[b];
  } else {
    s.q_row0 = static_cast<int64_t>(b) * seqlen_q;
    len_q = seqlen_q;
  }
  if (varlen_k()) {
    s.k_row0 = cu_seqlens_k[b];
    len_k = cu_seqlens_k[b + 1] - cu_seqlens_k[b];
  } else {
    s.k_row0 = static_cast<int64_t>(b) * seqlen_k;
    len_k = seqlen_k;
  }
  s.sq = seqused_q.empty() ? len_q : seqused_q[b];
  s.sk = seqused_k.empty() ? len_k : seqused_k[b];
  return s;
}

int64_t ReferenceProblem::lse_index(int b, int hq, int i) const {
  if (varlen_q()) return static_cast<int64_t>(hq) * rows_q() + cu_seqlens_q[b] + i;
  return (static_cast<int64_t>(b) * heads + hq) * seqlen_q + i;
}

void ReferenceProblem::key_range(const Sequence& s, int i, int* lo, int* hi) const {
  // Work in 64 bits: i + sk - sq + window can exceed int for huge windows.
  int64_t l = 0, h = static_cast<int64_t>(s.sk) - 1;
  const int64_t diag = static_cast<int64_t>(i) + s.sk - s.sq;  // the key aligned with row i (bottom-right)
  if (right() >= 0) h = std::min<int64_t>(h, diag + right());
  if (left() >= 0) l = std::max<int64_t>(l, diag - left());
  if (l > h) {  // nothing visible: an empty range in int
    *lo = 0;
    *hi = -1;
    return;
  }
  *lo = static_cast<int>(l);
  *hi = static_cast<int>(h);
}

void ReferenceProblem::validate() const {
  require(batch >= 1, "batch must be >= 1");
  require(heads >= 1 && heads_k >= 1 && heads % heads_k == 0, "heads must be a positive multiple of heads_k");
  require(head_dim >= 1 && dv() >= 1, "head dims must be positive");
  require(window_left >= -1 && window_right >= -1, "window sizes must be >= -1");
  require(!causal || window_right <= 0, "causal allows window_right -1 or 0 only");
  require(softcap >= 0.0, "softcap must be >= 0");
  auto check_cu = [&](const std::vector<int>& cu, const char* name) {
    if (cu.empty()) return;
    require(cu.size() == static_cast<size_t>(batch) + 1, std::string(name) + " must have batch + 1 entries");
    require(cu[0] >= 0, std::string(name) + "[0] must be >= 0");
    for (int b = 0; b < batch; ++b) require(cu[b + 1] >= cu[b], std::string(name) + " must be non-decreasing");
  };
  check_cu(cu_seqlens_q, "cu_seqlens_q");
  check_cu(cu_seqlens_k, "cu_seqlens_k");
  if (!varlen_q()) require(seqlen_q >= 0, "seqlen_q must be >= 0");
  if (!varlen_k()) require(seqlen_k >= 0, "seqlen_k must be >= 0");
  auto check_used = [&](const std::vector<int>& used, bool is_q, const char* name) {
    if (used.empty()) return;
    require(used.size() == static_cast<size_t>(batch), std::string(name) + " must have batch entries");
    for (int b = 0; b < batch; ++b) {
      int len;
      if (is_q)
        len = varlen_q() ? cu_seqlens_q[b + 1] - cu_seqlens_q[b] : seqlen_q;
      else
        len = varlen_k() ? cu_seqlens_k[b + 1] - cu_seqlens_k[b] : seqlen_k;
      require(used[b] >= 0 && used[b] <= len, std::string(name) + " entries must lie in [0, sequence length]");
    }
  };
  check_used(seqused_q, true, "seqused_q");
  check_used(seqused_k, false, "seqused_k");
}

std::string ReferenceProblem::to_string() const {
  std::ostringstream os;
  os << "batch=" << batch << " h=" << heads << " hk=" << heads_k << " d=" << head_dim << " dv=" << dv();
  if (varlen_q()) {
    os << " cu_q=[";
    for (size_t i = 0; i < cu_seqlens_q.size(); ++i) os << (i ? "," : "") << cu_seqlens_q[i];
    os << "]";
  } else {
    os << " sq=" << seqlen_q;
  }
  if (varlen_k()) {
    os << " cu_k=[";
    for (size_t i = 0; i < cu_seqlens_k.size(); ++i) os << (i ? "," : "") << cu_seqlens_k[i];
    os << "]";
  } else {
    os << " sk=" << seqlen_k;
  }
  auto list = [&](const char* name, const std::vector<int>& v) {
    if (v.empty()) return;
    os << " " << name << "=[";
    for (size_t i = 0; i < v.size(); ++i) os << (i ? "," : "") << v[i];
    os << "]";
  };
  list("seqused_q", seqused_q);
  list("seqused_k", seqused_k);
  os << " scale=" << scale();
  if (causal) os << " causal";
  if (window_left >= 0 || window_right >= 0) os << " window=(" << window_left << "," << window_right << ")";
  if (softcap > 0) os << " softcap=" << softcap;
  return os.str();
}

// ---- forward in double -------------------------------------------------------------------------------------------

void reference_forward(const ReferenceProblem& p, const double* q, const double* k, const double* v, double* out,
                       double* lse) {
  p.validate();
  const int d = p.head_dim, dv = p.dv(), h = p.heads, hk = p.heads_k, group = p.heads / p.heads_k;
  const double scale = p.scale();
  const double flops = 2.0 * static_cast<double>(p.rows_q()) * h * (d + dv) *
                       std::max<double>(1.0, static_cast<double>(p.rows_k()) / p.batch);
  parallel_for(static_cast<int64_t>(p.batch) * h, flops, [&](int64_t item) {
    const int b = static_cast<int>(item / h), hq = static_cast<int>(item % h), hkv = hq / group;
    const ReferenceProblem::Sequence s = p.sequence(b);
    std::vector<double> score(static_cast<size_t>(std::max(s.sk, 1)));
    std::vector<double> acc(static_cast<size_t>(dv));
    for (int i = 0; i < s.sq; ++i) {
      const double* qi = q + ((s.q_row0 + i) * h + hq) * d;
      double* oi = out + ((s.q_row0 + i) * h + hq) * dv;
      int lo, hi;
      p.key_range(s, i, &lo, &hi);
      if (lo > hi) {
        std::fill(oi, oi + dv, 0.0);
        if (lse) lse[p.lse_index(b, hq, i)] = kNegInf;
        continue;
      }
      double row_max = kNegInf;
      for (int j = lo; j <= hi; ++j) {
        const double* kj = k + ((s.k_row0 + j) * hk + hkv) * d;
        double dot = 0.0;
        for (int c = 0; c < d; ++c) dot += qi[c] * kj[c];
        const double sc = p.softcap > 0 ? p.softcap * std::tanh(dot * scale / p.softcap) : dot * scale;
        score[j - lo] = sc;
        row_max = std::max(row_max, sc);
      }
      double sum = 0.0;
      for (int j = lo; j <= hi; ++j) {
        score[j - lo] = std::exp(score[j - lo] - row_max);
        sum += score[j - lo];
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int j = lo; j <= hi; ++j) {
        const double pj = score[j - lo] / sum;
        const double* vj = v + ((s.k_row0 + j) * hk + hkv) * dv;
        for (int c = 0; c < dv; ++c) acc[c] += pj * vj[c];
      }
      std::copy(acc.begin(), acc.end(), oi);
      if (lse) lse[p.lse_index(b, hq, i)] = row_max + std::log(sum);
    }
  });
}

// ---- backward in double ------------------------------------------------------------------------------------------

void reference_backward(const ReferenceProblem& p, const double* q, const double* k, const double* v,
                        const double* dout, double* dq, double* dk, double* dv_out) {
  p.validate();
  const int d = p.head_dim, dv = p.dv(), h = p.heads, hk = p.heads_k, group = p.heads / p.heads_k;
  const double scale = p.scale();
  std::fill(dq, dq + p.q_elems(), 0.0);
  std::fill(dk, dk + p.k_elems(), 0.0);
  std::fill(dv_out, dv_out + p.v_elems(), 0.0);
  const double flops = 4.0 * static_cast<double>(p.rows_q()) * h * (d + dv) *
                       std::max<double>(1.0, static_cast<double>(p.rows_k()) / p.batch);
  // One item per (sequence, kv head): dk/dv of a kv head gather every query head of its group, so the group is the
  // unit that can run alone.
  parallel_for(static_cast<int64_t>(p.batch) * hk, flops, [&](int64_t item) {
    const int b = static_cast<int>(item / hk), hkv = static_cast<int>(item % hk);
    const ReferenceProblem::Sequence s = p.sequence(b);
    const size_t n = static_cast<size_t>(std::max(s.sk, 1));
    std::vector<double> score(n), dsdx(n), prob(n), dprob(n);
    for (int hq = hkv * group; hq < (hkv + 1) * group; ++hq) {
      for (int i = 0; i < s.sq; ++i) {
        int lo, hi;
        p.key_range(s, i, &lo, &hi);
        if (lo > hi) continue;  // the output is the constant 0: no gradient flows
        const double* qi = q + ((s.q_row0 + i) * h + hq) * d;
        const double* doi = dout + ((s.q_row0 + i) * h + hq) * dv;
        double* dqi = dq + ((s.q_row0 + i) * h + hq) * d;
        // Recompute the row's probabilities, and ds/d(q.k) for the chain rule.
        double row_max = kNegInf;
        for (int j = lo; j <= hi; ++j) {
          const double* kj = k + ((s.k_row0 + j) * hk + hkv) * d;
          double dot = 0.0;
          for (int c = 0; c < d; ++c) dot += qi[c] * kj[c];
          double sc, deriv;
          if (p.softcap > 0) {
            const double t = std::tanh(dot * scale / p.softcap);
            sc = p.softcap * t;
            deriv = scale * (1.0 - t * t);
          } else {
            sc = dot * scale;
            deriv = scale;
          }
          score[j - lo] = sc;
          dsdx[j - lo] = deriv;
          row_max = std::max(row_max, sc);
        }
        double sum = 0.0;
        for (int j = lo; j <= hi; ++j) {
          prob[j - lo] = std::exp(score[j - lo] - row_max);
          sum += prob[j - lo];
        }
        // dP_ij = dO_i . V_j and D_i = sum_j P_ij dP_ij (= dO_i . O_i).
        double row_dot = 0.0;
        for (int j = lo; j <= hi; ++j) {
          prob[j - lo] /= sum;
          const double* vj = v + ((s.k_row0 + j) * hk + hkv) * dv;
          double dp = 0.0;
          for (int c = 0; c < dv; ++c) dp += doi[c] * vj[c];
          dprob[j - lo] = dp;
          row_dot += prob[j - lo] * dp;
        }
        for (int j = lo; j <= hi; ++j) {
          const double pj = prob[j - lo];
          // dL/d(q.k) = P (dP - D) * ds/d(q.k)
          const double dx = pj * (dprob[j - lo] - row_dot) * dsdx[j - lo];
          const double* kj = k + ((s.k_row0 + j) * hk + hkv) * d;
          double* dkj = dk + ((s.k_row0 + j) * hk + hkv) * d;
          double* dvj = dv_out + ((s.k_row0 + j) * hk + hkv) * dv;
          for (int c = 0; c < d; ++c) {
            dqi[c] += dx * kj[c];
            dkj[c] += dx * qi[c];
          }
          for (int c = 0; c < dv; ++c) dvj[c] += pj * doi[c];
        }
      }
    }
  });
}

// ---- the low-precision naive forward (the tolerance yardstick) ---------------------------------------------------

void reference_forward_lowprec(const ReferenceProblem& p, Precision precision, const double* q, const double* k,
                               const double* v, double* out, double* lse) {
  p.validate();
  const int d = p.head_dim, dv = p.dv(), h = p.heads, hk = p.heads_k, group = p.heads / p.heads_k;
  const float scale = static_cast<float>(p.scale());
  const float softcap = static_cast<float>(p.softcap);
  // Round every input once up front; the loops below then run on plain floats.
  auto rounded = [precision](const double* x, int64_t n) {
    std::vector<float> r(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) r[i] = round_to(precision, static_cast<float>(x[i]));
    return r;
  };
  const std::vector<float> qf = rounded(q, p.q_elems()), kf = rounded(k, p.k_elems()), vf = rounded(v, p.v_elems());
  const double flops = 2.0 * static_cast<double>(p.rows_q()) * h * (d + dv) *
                       std::max<double>(1.0, static_cast<double>(p.rows_k()) / p.batch);
  parallel_for(static_cast<int64_t>(p.batch) * h, flops, [&](int64_t item) {
    const int b = static_cast<int>(item / h), hq = static_cast<int>(item % h), hkv = hq / group;
    const ReferenceProblem::Sequence s = p.sequence(b);
    std::vector<float> score(static_cast<size_t>(std::max(s.sk, 1)));
    std::vector<float> acc(static_cast<size_t>(dv));
    for (int i = 0; i < s.sq; ++i) {
      const float* qi = qf.data() + ((s.q_row0 + i) * h + hq) * d;
      double* oi = out + ((s.q_row0 + i) * h + hq) * dv;
      int lo, hi;
      p.key_range(s, i, &lo, &hi);
      if (lo > hi) {
        std::fill(oi, oi + dv, 0.0);
        if (lse) lse[p.lse_index(b, hq, i)] = kNegInf;
        continue;
      }
      float row_max = -std::numeric_limits<float>::infinity();
      for (int j = lo; j <= hi; ++j) {
        const float* kj = kf.data() + ((s.k_row0 + j) * hk + hkv) * d;
        float dot = 0.0f;
        for (int c = 0; c < d; ++c) dot += qi[c] * kj[c];
        const float s_low = round_to(precision, dot);  // the matmul's output tensor is in the input dtype
        const float sc =
            softcap > 0 ? round_to(precision, softcap * std::tanh(s_low * scale / softcap)) : s_low * scale;
        score[j - lo] = sc;
        row_max = std::max(row_max, sc);
      }
      float sum = 0.0f;
      for (int j = lo; j <= hi; ++j) {
        score[j - lo] = std::exp(score[j - lo] - row_max);
        sum += score[j - lo];
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int j = lo; j <= hi; ++j) {
        const float pj = round_to(precision, score[j - lo] / sum);
        const float* vj = vf.data() + ((s.k_row0 + j) * hk + hkv) * dv;
        for (int c = 0; c < dv; ++c) acc[c] += pj * vj[c];
      }
      for (int c = 0; c < dv; ++c) oi[c] = round_to(precision, acc[c]);
      if (lse) lse[p.lse_index(b, hq, i)] = static_cast<double>(row_max + std::log(sum));
    }
  });
}

}  // namespace ref
}  // namespace flash3
