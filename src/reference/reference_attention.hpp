// The CPU reference of attention: the oracle every flash3 test compares against.
//
// Semantics are FA3's (see include/flash3/types.hpp and shared/reference/fa3-python-api.md):
//   * Score      s_ij = (q_i . k_j) * scale, or with softcap c > 0: s_ij = c * tanh((q_i . k_j) * scale / c).
//   * Mask       within a sequence of sq query rows and sk keys, query i sees key j iff
//                    j < sk
//                    and (right < 0 or j <= i + sk - sq + right)
//                    and (left  < 0 or j >= i + sk - sq - left),
//                causal meaning right = 0 (together with `window_left` when that is given).
//   * Softmax    over the visible keys; out_i = sum_j p_ij v_j; lse_i = log(sum_j exp(s_ij)) (natural log).
//   * A row that sees no key gets out = 0 and lse = -inf.
//   * GQA        query head hq uses kv head hq / (heads / heads_k).
//
// Layouts are contiguous (row-major):
//   batch mode  q (b, sq, h, d), k (b, sk, hk, d), v (b, sk, hk, dv), out (b, sq, h, dv), lse (b, h, sq)
//   varlen      q (tq, h, d),    k (tk, hk, d),    v (tk, hk, dv),    out (tq, h, dv),    lse (h, tq)
// The q side (q, out, lse) is varlen when cu_seqlens_q is given, the k side (k, v) when cu_seqlens_k is given; FA3's
// varlen API gives both. seqused_q / seqused_k (one entry per sequence) limit each sequence to its first tokens; they
// also apply in batch mode. The lengths used by the mask (sq, sk above) are these used lengths.
//
// Rows the problem does not use (query rows at or beyond a sequence's used length, in either mode) are left
// UNTOUCHED in out and lse by the forward functions: callers must not compare them. The backward functions zero
// dq, dk and dv entirely first, so unused rows have gradient 0.
//
// Everything is computed in double (the low-precision emulation aside). Work is spread over the host's cores by
// independent (batch, head) slices, so results do not depend on the thread count.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "reference/host_float16.hpp"

namespace flash3 {
namespace ref {

struct ReferenceProblem {
  int batch = 1;
  int seqlen_q = 0;  // batch mode: padded length of every sequence; ignored on a varlen side
  int seqlen_k = 0;
  int heads = 1;
  int heads_k = 1;
  int head_dim = 0;
  int head_dim_v = 0;          // 0 means head_dim
  double softmax_scale = 0.0;  // <= 0 means 1 / sqrt(head_dim)
  bool causal = false;
  int window_left = -1;           // -1: unbounded
  int window_right = -1;          // -1: unbounded; must be -1 or 0 when causal
  double softcap = 0.0;           // > 0 turns softcapping on
  std::vector<int> cu_seqlens_q;  // size batch + 1, or empty (batch mode on the q side)
  std::vector<int> cu_seqlens_k;  // size batch + 1, or empty (batch mode on the k side)
  std::vector<int> seqused_q;     // size batch, or empty
  std::vector<int> seqused_k;     // size batch, or empty

  // Where one sequence lives and how long it is.
  struct Sequence {
    int64_t q_row0;  // first row of this sequence in the (rows, heads, dim) view of q / out
    int64_t k_row0;  // first row in the view of k / v
    int sq;          // query rows used (seqused_q or the sequence's length)
    int sk;          // keys used
  };

  bool varlen_q() const { return !cu_seqlens_q.empty(); }
  bool varlen_k() const { return !cu_seqlens_k.empty(); }
  int dv() const { return head_dim_v > 0 ? head_dim_v : head_dim; }
  double scale() const;
  // The window actually applied, causal folded in: right is 0 under causal.
  int left() const { return window_left; }
  int right() const { return causal ? 0 : window_right; }

  int64_t rows_q() const;  // tq in varlen, batch * seqlen_q otherwise
  int64_t rows_k() const;
  int64_t q_elems() const { return rows_q() * heads * head_dim; }
  int64_t k_elems() const { return rows_k() * heads_k * head_dim; }
  int64_t v_elems() const { return rows_k() * heads_k * dv(); }
  int64_t out_elems() const { return rows_q() * heads * dv(); }
  int64_t lse_elems() const { return rows_q() * heads; }

  Sequence sequence(int b) const;
  // Index of lse for sequence b, query head hq, row i of that sequence.
  int64_t lse_index(int b, int hq, int i) const;
  // The visible key range [*lo, *hi] of query row i (lo > hi when the row sees nothing).
  void key_range(const Sequence& s, int i, int* lo, int* hi) const;
  // Throws std::invalid_argument when the description is inconsistent.
  void validate() const;
  std::string to_string() const;
};

// Forward in double. `lse` may be null.
void reference_forward(const ReferenceProblem& p, const double* q, const double* k, const double* v, double* out,
                       double* lse);

// Backward in double: the gradients of L = sum(out * dout) with respect to q, k and v, for the forward above.
// dq, dk, dv are overwritten entirely (zero where a row takes no part). Under GQA, dk/dv sum over the query heads
// of the group.
void reference_backward(const ReferenceProblem& p, const double* q, const double* k, const double* v,
                        const double* dout, double* dq, double* dk, double* dv);

// A naive attention computed in the input precision, the way PyTorch evaluates it on fp16/bf16 tensors; it is the
// yardstick of FA3's tolerance rule (a kernel may be at most twice as far from the double reference as this).
//   S = q k^T accumulated in fp32, rounded to `precision`
//   s = S * scale in fp32;   with softcap: s = round(c * tanh(S * scale / c)) (tanh of a low-precision tensor)
//   softmax in fp32 (max, then sum of exp) over the visible keys; P rounded to `precision`
//   out = P v accumulated in fp32, rounded to `precision`;   lse = max + log(sum) in fp32 (lse is fp32 in FA3)
// Inputs are rounded to `precision` first (a no-op when they are representable). Outputs are stored as double but
// hold precision-representable values (out) and fp32 values (lse). Unused rows are left untouched, as above.
void reference_forward_lowprec(const ReferenceProblem& p, Precision precision, const double* q, const double* k,
                               const double* v, double* out, double* lse);

}  // namespace ref
}  // namespace flash3
