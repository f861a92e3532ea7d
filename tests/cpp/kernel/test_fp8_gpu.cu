// GPU tests of the FP8 (e4m3) forward, and host tests of its argument checks.
//
// The tolerance. FP8 attention is less accurate than a bf16 one by design: P = exp(...) is rounded to e4m3 (3
// mantissa bits, relative error up to 2^-4) before the P V GEMM. So the oracle is an FP8 emulation on the CPU
// (fp8_emulated_forward below): the exact (double) attention over the dequantised inputs, except that each P is
// rounded to e4m3 after scaling by 2^8 / rowmax (as the kernel does) while the row sum uses the unrounded values, and
// out is rounded to the output dtype. The kernel passes when
//     max |out - ref|  <=  2 * max |emulated - ref|  +  fp32 noise            (the FA3 rule, tolerance.hpp)
// with ref the double attention over the same dequantised inputs (or, for fp8_forward, over the original fp16/bf16
// inputs, the emulation then also running the quantise and Hadamard steps). The kernel's online softmax rounds P
// against a running max per key block instead of the row's final max, which changes individual roundings but not
// their size; the factor 2 covers it. LSE does not go through e4m3 at all: lse_close's 1e-3.
//
//   Fp8Forward.Direct*     e4m3 inputs through flash3::forward: head dims 64/80/128/256, masks, GQA, bf16/fp16 out,
//                          per-(batch, kv head) and per-block descales
//   Fp8Forward.Varlen      packed sequences, an empty one and one without keys
//   Fp8Forward.HighLevel*  fp8_forward on fp16/bf16 inputs with each technique on and off
//   Fp8Validation.*        argument errors (no GPU needed)
//   Fp8Transpose.*         the V transposer emulated on the host (ldmatrix / stmatrix semantics, its hand-written
//                          offsets against the CuTe layouts): V^T in the permuted key order, every byte written once,
//                          no bank conflicts (no GPU needed)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/gpu_utils.hpp"
#include "common/test_data.hpp"
#include "common/tolerance.hpp"
#include "flash3/flash3.hpp"
#include "flash3/fp8.hpp"
#include "kernels/common/hadamard.hpp"
#include "kernels/sm90/collective/mainloop_fwd_sm90_fp8_load.hpp"
#include "kernels/sm90/fp8_fwd_traits_sm90.hpp"
#include "reference/reference_attention.hpp"

namespace {

using flash3::ref::Precision;
using flash3::ref::ReferenceProblem;
using flash3_test::DeviceBuffer;

// ---- host e4m3 ----------------------------------------------------------------------------------------------------

double e4m3_decode(uint8_t b) {
  const int sign = b >> 7, exp = (b >> 3) & 15, man = b & 7;
  double v = exp == 0 ? std::ldexp(man / 8.0, -6) : std::ldexp(1.0 + man / 8.0, exp - 7);
  return sign ? -v : v;  // 0x7F / 0xFF (NaN) are never produced here
}

// Round to nearest e4m3 (ties to even), saturating at 448.
uint8_t e4m3_encode(double x) {
  static const std::vector<double> table = [] {
    std::vector<double> t(127);
    for (int b = 0; b < 127; ++b) t[b] = e4m3_decode(uint8_t(b));
    return t;
  }();
  const uint8_t sign = x < 0 ? 0x80 : 0;
  const double a = std::fabs(x);
  if (a >= 448.0) return sign | 126;
  auto it = std::lower_bound(table.begin(), table.end(), a);
  int hi = int(it - table.begin());
  int lo = hi > 0 ? hi - 1 : 0;
  int best = (a - table[lo] < table[hi] - a) ? lo : (a - table[lo] > table[hi] - a) ? hi : ((lo & 1) ? hi : lo);
  return sign | uint8_t(best);
}
double e4m3_round(double x) { return e4m3_decode(e4m3_encode(x)); }

// ---- the FP8 emulation oracle -------------------------------------------------------------------------------------

// Batch mode, contiguous layouts of ReferenceProblem. q, k, v: the dequantised inputs.
std::vector<double> fp8_emulated_forward(const ReferenceProblem& p, Precision out_prec, const std::vector<double>& q,
                                         const std::vector<double>& k, const std::vector<double>& v) {
  const int64_t h = p.heads, hk = p.heads_k, d = p.head_dim, dv = p.dv();
  std::vector<double> out(static_cast<size_t>(p.out_elems()), 0.0);
  const double scale = p.scale();
  std::vector<double> s(static_cast<size_t>(std::max<int64_t>(p.rows_k(), 1)));  // indexed by key within a sequence
  for (int b = 0; b < p.batch; ++b) {
    const ReferenceProblem::Sequence seq = p.sequence(b);
    for (int64_t hq = 0; hq < h; ++hq) {
      const int64_t hkv = hq / (h / hk);
      for (int i = 0; i < seq.sq; ++i) {
        int lo = 0, hi = -1;
        p.key_range(seq, i, &lo, &hi);
        double* o = &out[static_cast<size_t>(((seq.q_row0 + i) * h + hq) * dv)];
        if (lo > hi) continue;  // out = 0
        const double* qi = &q[static_cast<size_t>(((seq.q_row0 + i) * h + hq) * d)];
        double m = -INFINITY;
        for (int j = lo; j <= hi; ++j) {
          const double* kj = &k[static_cast<size_t>(((seq.k_row0 + j) * hk + hkv) * d)];
          double dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += qi[c] * kj[c];
          s[j] = dot * scale;
          m = std::max(m, s[j]);
        }
        double sum = 0;
        std::vector<double> acc(static_cast<size_t>(dv), 0.0);
        for (int j = lo; j <= hi; ++j) {
          const double pj = std::exp(s[j] - m) * 256.0;
          sum += pj;
          const double pr = e4m3_round(pj);
          const double* vj = &v[static_cast<size_t>(((seq.k_row0 + j) * hk + hkv) * dv)];
          for (int64_t c = 0; c < dv; ++c) acc[c] += pr * vj[c];
        }
        for (int64_t c = 0; c < dv; ++c) o[c] = flash3::ref::round_to(out_prec, float(acc[c] / sum));
      }
    }
  }
  return out;
}

enum class Mask { kNone, kCausal, kWindow };
enum class Descale { kNone, kPerHead, kPerBlock };

const char* mask_name(Mask m) { return m == Mask::kNone ? "nomask" : m == Mask::kCausal ? "causal" : "window"; }
const char* descale_name(Descale d) {
  return d == Descale::kNone ? "nodescale" : d == Descale::kPerHead ? "perhead" : "perblock";
}

void set_mask(ReferenceProblem* p, Mask m) {
  p->causal = m == Mask::kCausal;
  p->window_left = m == Mask::kWindow ? 70 : -1;
  p->window_right = m == Mask::kWindow ? 9 : -1;
}

flash3::AttentionOptions options_for(const ReferenceProblem& p) {
  flash3::AttentionOptions o;
  o.softmax_scale = static_cast<float>(p.softmax_scale);
  o.causal = p.causal;
  o.window_left = p.window_left;
  o.window_right = p.window_right;
  return o;
}

struct Outcome {
  bool not_supported = false;
  std::string message;
};

// Draws e4m3 data for a (rows, heads, d) tensor with one descale per (batch, head, block of `block` rows):
// returns the bytes and fills `deq` with byte * descale and `scales` with the descales ((b, heads, nblk)).
std::vector<uint8_t> random_fp8(int batch, int seqlen, int heads, int d, int block, Descale mode, uint64_t seed,
                                std::vector<double>* deq, std::vector<float>* scales, int heads_for_rank2,
                                int rank2_group) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uni(0.5, 2.0);
  const int nblk = std::max(1, (seqlen + block - 1) / block);
  // Per-head mode: one factor per (batch, kv head); q's heads read entry h / rank2_group.
  const int nscale_heads = mode == Descale::kPerBlock ? heads : heads_for_rank2;
  scales->assign(static_cast<size_t>(batch) * nscale_heads * (mode == Descale::kPerBlock ? nblk : 1), 1.f);
  for (auto& s : *scales) s = mode == Descale::kNone ? 1.f : static_cast<float>(0.05 * uni(gen));
  std::vector<uint8_t> bytes(static_cast<size_t>(batch) * seqlen * heads * d);
  deq->resize(bytes.size());
  for (int b = 0; b < batch; ++b)
    for (int r = 0; r < seqlen; ++r)
      for (int hh = 0; hh < heads; ++hh) {
        float sc = 1.f;
        if (mode == Descale::kPerBlock) sc = (*scales)[(static_cast<size_t>(b) * heads + hh) * nblk + r / block];
        if (mode == Descale::kPerHead) sc = (*scales)[static_cast<size_t>(b) * heads_for_rank2 + hh / rank2_group];
        for (int c = 0; c < d; ++c) {
          const size_t idx = ((static_cast<size_t>(b) * seqlen + r) * heads + hh) * d + c;
          // Unit-normal true values: stored = x / sc, up to ~5 / 0.025 = 200 < 448.
          uint8_t byte = 0;
          do {
            byte = e4m3_encode(normal(gen) / sc);
          } while ((byte & 0x7F) == 0);
          bytes[idx] = byte;
          (*deq)[idx] = e4m3_decode(byte) * sc;
        }
      }
  return bytes;
}

Outcome check_direct(ReferenceProblem p, Precision out_prec, Descale mode, uint64_t seed) {
  SCOPED_TRACE(std::string("fp8 out=") + flash3::ref::precision_name(out_prec) + " " + descale_name(mode) + " " +
               p.to_string());
  const int64_t b = p.batch, h = p.heads, hk = p.heads_k, d = p.head_dim, sq = p.seqlen_q, sk = p.seqlen_k;
  const flash3::Fp8BlockShape blocks = flash3::fp8_block_shape(static_cast<int32_t>(d));
  std::vector<double> q, k, v;
  std::vector<float> qs, ks, vs;
  const auto qb = random_fp8(p.batch, p.seqlen_q, p.heads, p.head_dim, blocks.block_m, mode, seed, &q, &qs,
                             p.heads_k, p.heads / p.heads_k);
  const auto kb = random_fp8(p.batch, p.seqlen_k, p.heads_k, p.head_dim, blocks.block_n, mode, seed + 1, &k, &ks,
                             p.heads_k, 1);
  const auto vb = random_fp8(p.batch, p.seqlen_k, p.heads_k, p.head_dim, blocks.block_n, mode, seed + 2, &v, &vs,
                             p.heads_k, 1);
  DeviceBuffer q_buf = DeviceBuffer::from(qb), k_buf = DeviceBuffer::from(kb), v_buf = DeviceBuffer::from(vb);
  DeviceBuffer qs_buf = DeviceBuffer::from(qs), ks_buf = DeviceBuffer::from(ks), vs_buf = DeviceBuffer::from(vs);
  const auto e4m3 = flash3::DType::kFloat8E4M3;
  flash3::ForwardArgs args;
  args.q = flash3::make_tensor(q_buf.get(), e4m3, {b, sq, h, d});
  args.k = flash3::make_tensor(k_buf.get(), e4m3, {b, sk, hk, d});
  args.v = flash3::make_tensor(v_buf.get(), e4m3, {b, sk, hk, d});
  const int64_t nbq = (sq + blocks.block_m - 1) / blocks.block_m, nbk = (sk + blocks.block_n - 1) / blocks.block_n;
  if (mode == Descale::kPerHead) {
    args.q_descale = flash3::make_tensor(qs_buf.get(), flash3::DType::kFloat32, {b, hk});
    args.k_descale = flash3::make_tensor(ks_buf.get(), flash3::DType::kFloat32, {b, hk});
    args.v_descale = flash3::make_tensor(vs_buf.get(), flash3::DType::kFloat32, {b, hk});
  } else if (mode == Descale::kPerBlock) {
    args.q_descale = flash3::make_tensor(qs_buf.get(), flash3::DType::kFloat32, {b, h, nbq});
    args.k_descale = flash3::make_tensor(ks_buf.get(), flash3::DType::kFloat32, {b, hk, nbk});
    args.v_descale = flash3::make_tensor(vs_buf.get(), flash3::DType::kFloat32, {b, hk, nbk});
  }
  const flash3::DType out_dt = flash3_test::to_dtype(out_prec);
  DeviceBuffer out_buf(static_cast<size_t>(p.out_elems() * 2)), lse_buf(static_cast<size_t>(p.lse_elems() * 4));
  out_buf.poison();
  lse_buf.poison();
  args.out = flash3::make_tensor(out_buf.get(), out_dt, {b, sq, h, d});
  args.lse = flash3::make_tensor(lse_buf.get(), flash3::DType::kFloat32, {b, h, sq});
  args.options = options_for(p);
  DeviceBuffer workspace;
  try {
    const int64_t ws = flash3::forward_workspace_size(args);
    workspace = DeviceBuffer(static_cast<size_t>(ws));
    args.workspace = workspace.get();
    args.workspace_bytes = ws;
    flash3::forward(args);
  } catch (const flash3::Error& e) {
    if (e.status() == flash3::Status::kNotSupported) return {true, e.what()};
    ADD_FAILURE() << "flash3::forward threw: " << e.what();
    return {};
  }
  flash3_test::sync_device("flash3::forward (fp8)");
  const auto out = flash3_test::download_lowprec(out_buf, static_cast<size_t>(p.out_elems()), out_prec);
  const auto lse = flash3_test::download_float(lse_buf, static_cast<size_t>(p.lse_elems()));
  std::vector<double> ref(out.size()), ref_lse(lse.size());
  flash3::ref::reference_forward(p, q.data(), k.data(), v.data(), ref.data(), ref_lse.data());
  const auto emu = fp8_emulated_forward(p, out_prec, q, k, v);
  const auto used = flash3_test::used_out_mask(p);
  EXPECT_TRUE(flash3_test::fa3_close("out", out, ref, emu, &used, flash3_test::out_locator(p)));
  const auto lse_used = flash3_test::used_lse_mask(p);
  EXPECT_TRUE(flash3_test::lse_close("lse", lse, ref_lse, &lse_used, flash3_test::lse_locator(p)));
  return {};
}

ReferenceProblem problem(int b, int sq, int sk, int h, int hk, int d) {
  ReferenceProblem p;
  p.batch = b;
  p.seqlen_q = sq;
  p.seqlen_k = sk;
  p.heads = h;
  p.heads_k = hk;
  p.head_dim = d;
  p.head_dim_v = d;
  return p;
}

struct DirectCase {
  int d;
  Mask mask;
  Descale descale;
  Precision out;
  bool gqa;
};

std::string direct_name(const DirectCase& c) {
  return "hd" + std::to_string(c.d) + "_" + mask_name(c.mask) + "_" + descale_name(c.descale) + "_" +
         flash3::ref::precision_name(c.out) + (c.gqa ? "_gqa" : "_mha");
}

std::vector<DirectCase> direct_cases() {
  std::vector<DirectCase> cs;
  for (int d : {64, 80, 128, 256})
    for (Mask m : {Mask::kNone, Mask::kCausal, Mask::kWindow})
      for (Descale ds : {Descale::kNone, Descale::kPerHead, Descale::kPerBlock})
        cs.push_back({d, m, ds, (d + int(m) + int(ds)) % 2 ? Precision::kFloat16 : Precision::kBFloat16,
                      (int(m) + int(ds)) % 2 == 1});
  return cs;
}

class Fp8Direct : public ::testing::TestWithParam<DirectCase> {};

TEST_P(Fp8Direct, MatchesEmulation) {
  FLASH3_REQUIRE_SM90();
  const DirectCase c = GetParam();
  const int h = c.gqa ? 4 : 2, hk = c.gqa ? 2 : 2;
  const std::pair<int, int> sizes[] = {{1, 1}, {17, 17}, {113, 203}, {203, 113}, {256, 384}, {300, 1000}};
  for (auto [sq, sk] : sizes) {
    ReferenceProblem p = problem(2, sq, sk, h, hk, c.d);
    set_mask(&p, c.mask);
    const Outcome o = check_direct(p, c.out, c.descale, flash3_test::seed_from(direct_name(c)) + sq * 7 + sk);
    if (o.not_supported) GTEST_SKIP() << o.message;
  }
}

INSTANTIATE_TEST_SUITE_P(Fp8Forward, Fp8Direct, ::testing::ValuesIn(direct_cases()),
                         [](const ::testing::TestParamInfo<DirectCase>& i) { return direct_name(i.param); });

// Varlen: packed (total, heads, d) tensors, an empty sequence and one without keys (out = 0, lse = -inf).
TEST(Fp8Forward, Varlen) {
  FLASH3_REQUIRE_SM90();
  for (Mask m : {Mask::kNone, Mask::kCausal}) {
    ReferenceProblem p = problem(3, 0, 0, 4, 2, 128);
    p.cu_seqlens_q = {0, 130, 130, 347};
    p.cu_seqlens_k = {0, 200, 261, 261};
    set_mask(&p, m);
    SCOPED_TRACE(std::string("fp8 varlen ") + p.to_string());
    const int64_t tq = p.rows_q(), tk = p.rows_k(), h = p.heads, hk = p.heads_k, d = p.head_dim;
    std::vector<double> q, k, v;
    std::vector<float> unused;
    const uint64_t seed = flash3_test::seed_from(std::string("fp8_varlen_") + mask_name(m));
    const auto qb = random_fp8(1, int(tq), int(h), int(d), 128, Descale::kNone, seed, &q, &unused, 1, 1);
    const auto kb = random_fp8(1, int(tk), int(hk), int(d), 128, Descale::kNone, seed + 1, &k, &unused, 1, 1);
    const auto vb = random_fp8(1, int(tk), int(hk), int(d), 128, Descale::kNone, seed + 2, &v, &unused, 1, 1);
    DeviceBuffer q_buf = DeviceBuffer::from(qb), k_buf = DeviceBuffer::from(kb), v_buf = DeviceBuffer::from(vb);
    DeviceBuffer cu_q = DeviceBuffer::from(p.cu_seqlens_q), cu_k = DeviceBuffer::from(p.cu_seqlens_k);
    DeviceBuffer out_buf(static_cast<size_t>(p.out_elems() * 2)), lse_buf(static_cast<size_t>(p.lse_elems() * 4));
    out_buf.poison();
    lse_buf.poison();
    const auto e4m3 = flash3::DType::kFloat8E4M3;
    flash3::ForwardArgs args;
    args.q = flash3::make_tensor(q_buf.get(), e4m3, {tq, h, d});
    args.k = flash3::make_tensor(k_buf.get(), e4m3, {tk, hk, d});
    args.v = flash3::make_tensor(v_buf.get(), e4m3, {tk, hk, d});
    args.out = flash3::make_tensor(out_buf.get(), flash3::DType::kBFloat16, {tq, h, d});
    args.lse = flash3::make_tensor(lse_buf.get(), flash3::DType::kFloat32, {h, tq});
    args.varlen.cu_seqlens_q = cu_q.as<const int32_t>();
    args.varlen.cu_seqlens_k = cu_k.as<const int32_t>();
    args.varlen.batch = p.batch;
    args.varlen.max_seqlen_q = 217;
    args.varlen.max_seqlen_k = 200;
    args.options = options_for(p);
    DeviceBuffer workspace;
    try {
      const int64_t ws = flash3::forward_workspace_size(args);
      workspace = DeviceBuffer(static_cast<size_t>(ws));
      args.workspace = workspace.get();
      args.workspace_bytes = ws;
      flash3::forward(args);
    } catch (const flash3::Error& e) {
      if (e.status() == flash3::Status::kNotSupported) GTEST_SKIP() << e.what();
      FAIL() << e.what();
    }
    flash3_test::sync_device("flash3::forward (fp8 varlen)");
    const auto out = flash3_test::download_lowprec(out_buf, static_cast<size_t>(p.out_elems()), Precision::kBFloat16);
    const auto lse = flash3_test::download_float(lse_buf, static_cast<size_t>(p.lse_elems()));
    std::vector<double> ref(out.size()), ref_lse(lse.size());
    flash3::ref::reference_forward(p, q.data(), k.data(), v.data(), ref.data(), ref_lse.data());
    const auto emu = fp8_emulated_forward(p, Precision::kBFloat16, q, k, v);
    const auto used = flash3_test::used_out_mask(p);
    EXPECT_TRUE(flash3_test::fa3_close("out", out, ref, emu, &used, flash3_test::out_locator(p)));
    const auto lse_used = flash3_test::used_lse_mask(p);
    EXPECT_TRUE(flash3_test::lse_close("lse", lse, ref_lse, &lse_used, flash3_test::lse_locator(p)));
  }
}

// ---- fp8_forward (quantise + Hadamard + FP8 attention) --------------------------------------------------------------

// CPU model of the quantise step: rows of (b, s, heads, d) transformed (optionally) and quantised per 128-row block
// or per tensor; returns the dequantised values.
std::vector<double> emulate_quantize(const std::vector<double>& x, int batch, int seqlen, int heads, int d,
                                     bool per_block, bool hadamard, uint64_t seed, int block) {
  std::vector<double> t = x;
  if (hadamard) {
    for (size_t row = 0; row < t.size() / d; ++row) {
      double* r = &t[row * d];
      for (int c = 0; c < d; ++c) r[c] *= flash3::hadamard_sign(seed, c);
      for (int len = 1; len < d; len *= 2)
        for (int i = 0; i < d; i += 2 * len)
          for (int j = i; j < i + len; ++j) {
            const double a = r[j], bb = r[j + len];
            r[j] = a + bb;
            r[j + len] = a - bb;
          }
      for (int c = 0; c < d; ++c) r[c] /= std::sqrt(double(d));
    }
  }
  const int nblk = (seqlen + block - 1) / block;
  auto quant = [&](double amax, size_t begin_row, int rows, int bb, int hh) {
    (void)begin_row;
    const double descale = amax > 0 ? float(amax) / 448.f : 1.0;
    const double inv = 448.0 / (amax > 0 ? amax : 448.0);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < d; ++c) {
        double& e = t[((static_cast<size_t>(bb) * seqlen + r + begin_row) * heads + hh) * d + c];
        e = e4m3_round(double(float(e) * float(inv))) * float(descale);
      }
  };
  if (per_block) {
    for (int bb = 0; bb < batch; ++bb)
      for (int hh = 0; hh < heads; ++hh)
        for (int blk = 0; blk < nblk; ++blk) {
          const int r0 = blk * block, rows = std::min(block, seqlen - r0);
          double amax = 0;
          for (int r = r0; r < r0 + rows; ++r)
            for (int c = 0; c < d; ++c)
              amax = std::max(amax, std::fabs(t[((static_cast<size_t>(bb) * seqlen + r) * heads + hh) * d + c]));
          quant(amax, r0, rows, bb, hh);
        }
  } else {
    double amax = 0;
    for (double e : t) amax = std::max(amax, std::fabs(e));
    for (int bb = 0; bb < batch; ++bb)
      for (int hh = 0; hh < heads; ++hh) quant(amax, 0, seqlen, bb, hh);
  }
  return t;
}

struct HighCase {
  int d;
  bool block;
  bool hadamard;
  Precision dtype;
  Mask mask;
};

std::string high_name(const HighCase& c) {
  return "hd" + std::to_string(c.d) + (c.block ? "_block" : "_tensor") + (c.hadamard ? "_hadamard" : "_plain") + "_" +
         flash3::ref::precision_name(c.dtype) + "_" + mask_name(c.mask);
}

std::vector<HighCase> high_cases() {
  std::vector<HighCase> cs;
  for (int d : {64, 128, 256})
    for (bool blk : {false, true})
      for (bool had : {false, true})
        cs.push_back({d, blk, had, (d / 64 + blk) % 2 ? Precision::kFloat16 : Precision::kBFloat16,
                      had && blk ? Mask::kCausal : Mask::kNone});
  return cs;
}

class Fp8HighLevel : public ::testing::TestWithParam<HighCase> {};

TEST_P(Fp8HighLevel, MatchesEmulation) {
  FLASH3_REQUIRE_SM90();
  const HighCase c = GetParam();
  for (auto [sq, sk] : {std::pair<int, int>{77, 77}, {300, 520}}) {
    ReferenceProblem p = problem(2, sq, sk, 4, 2, c.d);
    set_mask(&p, c.mask);
    SCOPED_TRACE(high_name(c) + " " + p.to_string());
    const uint64_t seed = flash3_test::seed_from(high_name(c)) + sq;
    // Inputs with outliers (the FA3 paper's setup): N(0, 1) plus N(0, 10^2) on 0.1% of entries.
    auto make = [&](int64_t n, uint64_t s) {
      auto x = flash3_test::random_normal(n, c.dtype, s);
      std::mt19937_64 gen(s ^ 0xABCDEF);
      std::uniform_real_distribution<double> u(0, 1);
      std::normal_distribution<double> big(0, 10);
      for (auto& e : x)
        if (u(gen) < 0.001) e = flash3::ref::round_to(c.dtype, float(e + big(gen)));
      return x;
    };
    const auto q = make(p.q_elems(), seed), k = make(p.k_elems(), seed + 1), v = make(p.v_elems(), seed + 2);
    DeviceBuffer q_buf = flash3_test::upload_lowprec(q, c.dtype), k_buf = flash3_test::upload_lowprec(k, c.dtype),
                 v_buf = flash3_test::upload_lowprec(v, c.dtype);
    const flash3::DType dt = flash3_test::to_dtype(c.dtype);
    flash3::Fp8ForwardArgs a;
    const int64_t b = p.batch, h = p.heads, hk = p.heads_k, d = c.d;
    a.q = flash3::make_tensor(q_buf.get(), dt, {b, sq, h, d});
    a.k = flash3::make_tensor(k_buf.get(), dt, {b, sk, hk, d});
    a.v = flash3::make_tensor(v_buf.get(), dt, {b, sk, hk, d});
    DeviceBuffer out_buf(static_cast<size_t>(p.out_elems() * 2)), lse_buf(static_cast<size_t>(p.lse_elems() * 4));
    out_buf.poison();
    lse_buf.poison();
    a.out = flash3::make_tensor(out_buf.get(), dt, {b, sq, h, d});
    a.lse = flash3::make_tensor(lse_buf.get(), flash3::DType::kFloat32, {b, h, sq});
    a.options = options_for(p);
    a.fp8.block_quantization = c.block;
    a.fp8.incoherent_processing = c.hadamard;
    a.fp8.seed = seed;
    DeviceBuffer ws;
    try {
      const int64_t bytes = flash3::fp8_forward_workspace_size(a);
      ws = DeviceBuffer(static_cast<size_t>(bytes));
      a.workspace = ws.get();
      a.workspace_bytes = bytes;
      flash3::fp8_forward(a);
    } catch (const flash3::Error& e) {
      if (e.status() == flash3::Status::kNotSupported) GTEST_SKIP() << e.what();
      FAIL() << e.what();
    }
    flash3_test::sync_device("flash3::fp8_forward");
    const auto out = flash3_test::download_lowprec(out_buf, static_cast<size_t>(p.out_elems()), c.dtype);
    const auto lse = flash3_test::download_float(lse_buf, static_cast<size_t>(p.lse_elems()));
    std::vector<double> ref(out.size()), ref_lse(lse.size());
    flash3::ref::reference_forward(p, q.data(), k.data(), v.data(), ref.data(), ref_lse.data());
    const flash3::Fp8BlockShape blocks = flash3::fp8_block_shape(c.d);
    const auto qd = emulate_quantize(q, p.batch, sq, p.heads, c.d, c.block, c.hadamard, seed, blocks.block_m);
    const auto kd = emulate_quantize(k, p.batch, sk, p.heads_k, c.d, c.block, c.hadamard, seed, blocks.block_n);
    const auto vd = emulate_quantize(v, p.batch, sk, p.heads_k, c.d, c.block, false, seed, blocks.block_n);
    const auto emu = fp8_emulated_forward(p, c.dtype, qd, kd, vd);
    const auto used = flash3_test::used_out_mask(p);
    EXPECT_TRUE(flash3_test::fa3_close("out", out, ref, emu, &used, flash3_test::out_locator(p)));
    // LSE: the scores themselves carry the quantisation error of q and k, so compare against the emulated inputs.
    std::vector<double> emu_out(out.size()), emu_lse(lse.size());
    flash3::ref::reference_forward(p, qd.data(), kd.data(), vd.data(), emu_out.data(), emu_lse.data());
    const auto lse_used = flash3_test::used_lse_mask(p);
    EXPECT_TRUE(flash3_test::lse_close("lse", lse, emu_lse, &lse_used, flash3_test::lse_locator(p), 2e-3));
  }
}

INSTANTIATE_TEST_SUITE_P(Fp8Forward, Fp8HighLevel, ::testing::ValuesIn(high_cases()),
                         [](const ::testing::TestParamInfo<HighCase>& i) { return high_name(i.param); });

// ---- argument checks (host only) ----------------------------------------------------------------------------------

flash3::ForwardArgs fp8_args(void* base) {
  flash3::ForwardArgs a;
  char* p = static_cast<char*>(base);
  const auto e4m3 = flash3::DType::kFloat8E4M3;
  a.q = flash3::make_tensor(p, e4m3, {2, 256, 4, 128});
  a.k = flash3::make_tensor(p, e4m3, {2, 300, 2, 128});
  a.v = flash3::make_tensor(p, e4m3, {2, 300, 2, 128});
  a.out = flash3::make_tensor(p, flash3::DType::kBFloat16, {2, 256, 4, 128});
  return a;
}

std::string error_of(const flash3::ForwardArgs& a) {
  try {
    flash3::validate_forward(a, 90);
  } catch (const flash3::Error& e) {
    return e.what();
  }
  return "";
}

alignas(256) char g_fake[256];

TEST(Fp8Validation, AcceptsValidCalls) {
  flash3::ForwardArgs a = fp8_args(g_fake);
  EXPECT_EQ(error_of(a), "");
  a.q_descale = flash3::make_tensor(g_fake, flash3::DType::kFloat32, {2, 2});
  a.k_descale = flash3::make_tensor(g_fake, flash3::DType::kFloat32, {2, 2, 3});  // ceil(300 / 128), hd 128
  a.v_descale = flash3::make_tensor(g_fake, flash3::DType::kFloat32, {2, 2}, {0, 0});
  EXPECT_EQ(error_of(a), "");
  a.out.dtype = flash3::DType::kFloat16;
  EXPECT_EQ(error_of(a), "");
}

TEST(Fp8Validation, NamesTheBadArgument) {
  flash3::ForwardArgs a = fp8_args(g_fake);
  a.out.dtype = flash3::DType::kFloat8E4M3;
  EXPECT_NE(error_of(a).find("out.dtype"), std::string::npos) << error_of(a);
  a = fp8_args(g_fake);
  a.k.dtype = flash3::DType::kBFloat16;
  EXPECT_NE(error_of(a).find("k.dtype"), std::string::npos) << error_of(a);
  a = fp8_args(g_fake);
  a.q_descale = flash3::make_tensor(g_fake, flash3::DType::kFloat32, {2, 4});  // per kv head: (2, 2)
  EXPECT_NE(error_of(a).find("q_descale.shape"), std::string::npos) << error_of(a);
  a = fp8_args(g_fake);
  a.q_descale = flash3::make_tensor(g_fake, flash3::DType::kFloat32, {2, 4, 3});  // ceil(256 / 128) = 2
  EXPECT_NE(error_of(a).find("q_descale.shape"), std::string::npos) << error_of(a);
  a = fp8_args(g_fake);
  a.v_descale = flash3::make_tensor(g_fake, flash3::DType::kFloat16, {2, 2});
  EXPECT_NE(error_of(a).find("v_descale.dtype"), std::string::npos) << error_of(a);
  a = fp8_args(g_fake);
  a.options.softcap = 10.f;
  EXPECT_NE(error_of(a).find("softcap"), std::string::npos) << error_of(a);
  a = fp8_args(g_fake);
  a.q.shape[3] = a.k.shape[3] = a.v.shape[3] = a.out.shape[3] = 72;
  EXPECT_NE(error_of(a).find("multiple of 16"), std::string::npos) << error_of(a);
  // Descales on 16-bit inputs stay an error.
  a = fp8_args(g_fake);
  a.q.dtype = a.k.dtype = a.v.dtype = flash3::DType::kBFloat16;
  a.q_descale = flash3::make_tensor(g_fake, flash3::DType::kFloat32, {2, 2});
  EXPECT_NE(error_of(a).find("q_descale is given"), std::string::npos) << error_of(a);
}

TEST(Fp8Validation, BlockShapeMatchesQuantiser) {
  for (int d : {64, 128, 256}) {
    const flash3::Fp8BlockShape s = flash3::fp8_block_shape(d);
    // The quantiser handles blocks of 64, 96, 128 or 192 rows.
    EXPECT_TRUE(s.block_m == 64 || s.block_m == 96 || s.block_m == 128 || s.block_m == 192) << s.block_m;
    EXPECT_TRUE(s.block_n == 64 || s.block_n == 96 || s.block_n == 128) << s.block_n;
  }
  EXPECT_THROW(flash3::fp8_block_shape(0), flash3::Error);
}

TEST(Fp8Validation, HostE4m3RoundTrip) {
  // The host codec the oracle relies on: exact on representable values, nearest otherwise, saturating.
  for (int b = 0; b < 127; ++b) EXPECT_EQ(e4m3_encode(e4m3_decode(uint8_t(b))), b);
  EXPECT_EQ(e4m3_decode(e4m3_encode(1000.0)), 448.0);
  EXPECT_EQ(e4m3_decode(e4m3_encode(1.06)), 1.0);
  EXPECT_EQ(e4m3_decode(e4m3_encode(-1.07)), -1.125);
}

// ---- the V transposer's addressing (host only) ---------------------------------------------------------------

// Emulates a whole V tile through the transposer on the host: ldmatrix.x4.trans and stmatrix.x4 as the PTX ISA
// defines them (m8n8, 16-bit elements; matrix m's row i at the address lane 8m + i gives; lane l holds elements
// (l / 4, 2 (l % 4) .. +1) of each matrix, of its transpose with .trans), the unit walk of every transposer warp, and
// the shared-memory offsets through the CuTe layouts of sVraw / sVt. V^T must then hold, at key position p of each
// 16-key chunk, key sigma(p) = 8 ((p / 2) % 2) + 2 (p / 4) + p % 2, and every V^T byte must be written exactly once.
template <int kD>
void check_transpose_emulated() {
  using Traits = flash3::Fp8FwdTraitsSm90<kD, false, false>;
  using Transposer = flash3::Fp8VTransposer<Traits>;
  auto raw = cute::take<0, 2>(typename Traits::SmemLayoutVraw{});  // (keys, dv) -> byte offset
  auto vt = cute::take<0, 2>(typename Traits::SmemLayoutVt{});     // (dv, keys) -> byte offset
  constexpr int kN = Traits::kBlockN, kDv = Traits::kHeadDimV;
  std::vector<uint8_t> smem_raw(kN * kDv), smem_vt(kN * kDv, 0);
  std::vector<int> writes(kN * kDv, 0);
  std::mt19937 rng(kD);
  std::vector<uint8_t> v(kN * kDv);  // logical V (key, dv)
  for (auto& x : v) x = uint8_t(rng());
  for (int key = 0; key < kN; ++key)
    for (int d = 0; d < kDv; ++d) smem_raw[int(raw(key, d))] = v[key * kDv + d];

  int misaligned = 0;
  for (int warp = 0; warp < Traits::kNumTransposeWarps; ++warp) {
    for (int unit = warp; unit < Transposer::kUnits; unit += Traits::kNumTransposeWarps) {
      const int c = unit % Transposer::kChunks, g = unit / Transposer::kChunks;
      // ldmatrix.x4.trans: row addresses from each lane, then the fragments.
      uint32_t ld_addr[32], st_addr[32], regs[32][4], words[32][4];
      for (int lane = 0; lane < 32; ++lane) {
        ld_addr[lane] = Transposer::load_offset(Transposer::load_base(lane), c, g);
        st_addr[lane] = Transposer::store_offset(Transposer::store_base(lane), c, g);
        misaligned += int(ld_addr[lane] % 16 != 0) + int(st_addr[lane] % 16 != 0);
        ASSERT_LE(ld_addr[lane] + 16, uint32_t(kN * kDv)) << "hd" << kD;
        ASSERT_LE(st_addr[lane] + 16, uint32_t(kN * kDv)) << "hd" << kD;
      }
      auto elem16 = [&](uint32_t row_addr, int e) {  // 16-bit element e of a 16-byte row, little-endian
        return uint32_t(smem_raw[row_addr + 2 * e]) | (uint32_t(smem_raw[row_addr + 2 * e + 1]) << 8);
      };
      for (int lane = 0; lane < 32; ++lane) {
        const int a = lane / 4, t = lane % 4;
        for (int m = 0; m < 4; ++m) {
          // Transposed fragment: elements (2t, a) and (2t + 1, a) of matrix m (rows = the addressed rows).
          regs[lane][m] = elem16(ld_addr[8 * m + 2 * t], a) |
                          (elem16(ld_addr[8 * m + 2 * t + 1], a) << 16);
        }
        Transposer::permute(regs[lane], lane, words[lane]);
      }
      // stmatrix.x4: lane (a, t)'s word m is bytes 4t .. 4t + 3 of matrix m's row a.
      for (int lane = 0; lane < 32; ++lane) {
        const int a = lane / 4, t = lane % 4;
        for (int m = 0; m < 4; ++m) {
          const uint32_t row_addr = st_addr[8 * m + a];
          for (int b = 0; b < 4; ++b) {
            smem_vt[row_addr + 4 * t + b] = uint8_t(words[lane][m] >> (8 * b));
            ++writes[row_addr + 4 * t + b];
          }
        }
      }
    }
  }
  EXPECT_EQ(misaligned, 0) << "hd" << kD << ": ldmatrix / stmatrix rows must be 16-byte aligned";
  for (int x : writes) ASSERT_EQ(x, 1) << "hd" << kD << ": a V^T byte written " << x << " times";
  int wrong = 0;
  for (int d = 0; d < kDv; ++d)
    for (int pos = 0; pos < kN; ++pos) {
      const int p = pos % 16;
      const int key = 16 * (pos / 16) + 8 * ((p / 2) % 2) + 2 * (p / 4) + p % 2;
      wrong += int(smem_vt[int(vt(d, pos))] != v[key * kDv + d]);
    }
  EXPECT_EQ(wrong, 0) << "hd" << kD << ": V^T bytes that do not hold V[sigma(p)][d]";
}

// Bank conflicts: the eight 16-byte rows of each ldmatrix / stmatrix matrix should cover the 32 banks once.
template <int kD>
void check_transpose_banks() {
  using Traits = flash3::Fp8FwdTraitsSm90<kD, false, false>;
  using Transposer = flash3::Fp8VTransposer<Traits>;
  int conflicted = 0;
  for (int unit = 0; unit < Transposer::kUnits; ++unit) {
    const int c = unit % Transposer::kChunks, g = unit / Transposer::kChunks;
    for (int m = 0; m < 4; ++m) {
      unsigned ld_groups = 0, st_groups = 0;  // 16-byte bank groups (8 per 128 bytes)
      for (int i = 0; i < 8; ++i) {
        ld_groups |= 1u << ((Transposer::load_offset(Transposer::load_base(8 * m + i), c, g) / 16) % 8);
        st_groups |= 1u << ((Transposer::store_offset(Transposer::store_base(8 * m + i), c, g) / 16) % 8);
      }
      conflicted += int(ld_groups != 0xff) + int(st_groups != 0xff);
    }
  }
  EXPECT_EQ(conflicted, 0) << "hd" << kD << ": matrices whose rows share shared-memory banks";
}

TEST(Fp8Transpose, EmulatedTileHoldsPermutedVTransposeAndIsConflictFree) {
  check_transpose_emulated<64>();
  check_transpose_emulated<128>();
  check_transpose_emulated<256>();
  check_transpose_banks<64>();
  check_transpose_banks<128>();
  check_transpose_banks<256>();
}

}  // namespace
