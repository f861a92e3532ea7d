// End-to-end GPU tests of flash3::backward against the double reference, under FA3's tolerance rule applied to the
// gradients: each of dq, dk, dv within twice the error of a naive backward computed in the input precision (the
// PyTorch-style yardstick below), plus the fp32 noise floor of tests/cpp/common/tolerance.hpp.
//
//   FlashBackwardSmall          dtype x head dims x mask x softcap x GQA over small odd shapes, CPU reference
//   FlashBackwardVarlen         varlen with an empty sequence, a sequence without keys, seqused_q/k
//   FlashBackwardLarge          longer sequences (1k-2k keys), causal and not, GQA
//   FlashBackwardDeterministic  deterministic = true gives bitwise-identical dq, dk, dv over repeated runs
//   FlashBackwardDeterministicShapes  the same for varlen (against the CPU reference), unequal lengths, long keys
//
// out and lse come from the CPU reference (rounded to the dtype / fp32), so these tests do not depend on the forward
// kernel. Gradients are poisoned with NaN before each run. A configuration whose kernel this build does not contain
// reports SKIPPED with the library's message.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "common/attention_cases.hpp"
#include "common/gpu_utils.hpp"
#include "common/test_data.hpp"
#include "common/tolerance.hpp"
#include "flash3/flash3.hpp"
#include "reference/reference_attention.hpp"

namespace {

using flash3::ref::Precision;
using flash3::ref::ReferenceProblem;
using flash3_test::DeviceBuffer;
using flash3_test::Gqa;
using flash3_test::Mask;
using flash3_test::gqa_name;
using flash3_test::mask_name;
using flash3_test::max_len;
using flash3_test::set_heads;
using flash3_test::set_mask;
using flash3_test::set_softcap;

// ---- the low-precision yardstick -------------------------------------------------------------------------------------

float rnd(Precision p, double x) { return flash3::ref::round_to(p, static_cast<float>(x)); }

// A naive backward the way PyTorch autograd evaluates attention on fp16/bf16 tensors: every matmul accumulates in fp32
// and rounds its output to `prec`; the softmax and its backward run in fp32 on rounded inputs. Gradients of a GQA
// group are rounded per query head and summed (PyTorch expands k/v over the group).
void naive_backward_lowprec(const ReferenceProblem& p, Precision prec, const std::vector<double>& q,
                            const std::vector<double>& k, const std::vector<double>& v,
                            const std::vector<double>& dout, std::vector<double>* dq, std::vector<double>* dk,
                            std::vector<double>* dv) {
  const int h = p.heads, hk = p.heads_k, d = p.head_dim, dvd = p.dv();
  const double scale = p.scale();
  dq->assign(static_cast<size_t>(p.q_elems()), 0.0);
  dk->assign(static_cast<size_t>(p.k_elems()), 0.0);
  dv->assign(static_cast<size_t>(p.v_elems()), 0.0);
  // Work splits by (batch, query head) over threads; dq rows are disjoint, dk/dv (shared by a GQA group) go to
  // per-thread partial sums that are added afterwards.
  const int num_slices = p.batch * h;
  const int num_threads =
      std::max(1, std::min<int>(num_slices, static_cast<int>(std::thread::hardware_concurrency())));
  std::vector<std::vector<double>> part_k(num_threads, std::vector<double>(dk->size(), 0.0));
  std::vector<std::vector<double>> part_v(num_threads, std::vector<double>(dv->size(), 0.0));
  auto slice = [&](int b, int hq_only, std::vector<double>* dk_part, std::vector<double>* dv_part) {
    const ReferenceProblem::Sequence s = p.sequence(b);
    if (s.sq == 0 || s.sk == 0) return;
    const int hkv = hq_only / (h / hk);
    {
      const int hq = hq_only;
      auto qi = [&](int i, int c) { return q[((s.q_row0 + i) * h + hq) * d + c]; };
      auto kj = [&](int j, int c) { return k[((s.k_row0 + j) * hk + hkv) * d + c]; };
      auto vj = [&](int j, int c) { return v[((s.k_row0 + j) * hk + hkv) * dvd + c]; };
      auto doi = [&](int i, int c) { return dout[((s.q_row0 + i) * h + hq) * dvd + c]; };
      std::vector<float> P(static_cast<size_t>(s.sq) * s.sk, 0.f), dS(P.size(), 0.f);
      for (int i = 0; i < s.sq; ++i) {
        int lo = 0, hi = -1;
        p.key_range(s, i, &lo, &hi);
        if (lo > hi) continue;
        std::vector<float> sc(static_cast<size_t>(s.sk), -INFINITY), grad(static_cast<size_t>(s.sk), 1.f);
        float mx = -INFINITY;
        for (int j = lo; j <= hi; ++j) {
          float acc = 0.f;
          for (int c = 0; c < d; ++c) acc += static_cast<float>(qi(i, c) * kj(j, c));
          float x = rnd(prec, acc) * static_cast<float>(scale);
          if (p.softcap > 0) {
            const float t = std::tanh(x / static_cast<float>(p.softcap));
            grad[j] = 1.f - t * t;
            x = rnd(prec, static_cast<float>(p.softcap) * t);
          }
          sc[j] = x;
          mx = std::max(mx, x);
        }
        float sum = 0.f;
        for (int j = lo; j <= hi; ++j) sum += std::exp(sc[j] - mx);
        float dot = 0.f;  // sum_j P_ij dP_ij (softmax backward)
        std::vector<float> dP(static_cast<size_t>(s.sk), 0.f);
        for (int j = lo; j <= hi; ++j) {
          P[i * s.sk + j] = rnd(prec, std::exp(sc[j] - mx) / sum);
          float acc = 0.f;
          for (int c = 0; c < dvd; ++c) acc += static_cast<float>(doi(i, c) * vj(j, c));
          dP[j] = rnd(prec, acc);
          dot += P[i * s.sk + j] * dP[j];
        }
        for (int j = lo; j <= hi; ++j) {
          float g = rnd(prec, P[i * s.sk + j] * (dP[j] - dot));
          if (p.softcap > 0) g = rnd(prec, g * grad[j]);
          dS[i * s.sk + j] = g;
        }
      }
      for (int i = 0; i < s.sq; ++i)
        for (int c = 0; c < d; ++c) {
          float acc = 0.f;
          for (int j = 0; j < s.sk; ++j) acc += dS[i * s.sk + j] * static_cast<float>(kj(j, c));
          (*dq)[((s.q_row0 + i) * h + hq) * d + c] = rnd(prec, acc * scale);
        }
      for (int j = 0; j < s.sk; ++j) {
        for (int c = 0; c < d; ++c) {
          float acc = 0.f;
          for (int i = 0; i < s.sq; ++i) acc += dS[i * s.sk + j] * static_cast<float>(qi(i, c));
          (*dk_part)[((s.k_row0 + j) * hk + hkv) * d + c] += rnd(prec, acc * scale);
        }
        for (int c = 0; c < dvd; ++c) {
          float acc = 0.f;
          for (int i = 0; i < s.sq; ++i) acc += P[i * s.sk + j] * static_cast<float>(doi(i, c));
          (*dv_part)[((s.k_row0 + j) * hk + hkv) * dvd + c] += rnd(prec, acc);
        }
      }
    }
  };
  std::vector<std::thread> workers;
  for (int t = 0; t < num_threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = t; i < num_slices; i += num_threads) slice(i / h, i % h, &part_k[t], &part_v[t]);
    });
  }
  for (auto& w : workers) w.join();
  for (int t = 0; t < num_threads; ++t) {
    for (size_t i = 0; i < dk->size(); ++i) (*dk)[i] += part_k[t][i];
    for (size_t i = 0; i < dv->size(); ++i) (*dv)[i] += part_v[t][i];
  }
  for (auto* g : {dk, dv})
    for (double& x : *g) x = rnd(prec, x);
}

// ---- running flash3::backward ----------------------------------------------------------------------------------------

struct Gradients {
  std::vector<double> dq, dk, dv;
  std::vector<uint16_t> dq_bits, dk_bits, dv_bits;
};

struct Inputs {
  std::vector<double> q, k, v, dout, out, lse;
};

Inputs make_inputs(const ReferenceProblem& p, Precision dt, uint64_t seed) {
  Inputs in;
  in.q = flash3_test::random_normal(p.q_elems(), dt, seed);
  in.k = flash3_test::random_normal(p.k_elems(), dt, seed + 1);
  in.v = flash3_test::random_normal(p.v_elems(), dt, seed + 2);
  in.dout = flash3_test::random_normal(p.out_elems(), dt, seed + 3);
  in.out.assign(static_cast<size_t>(p.out_elems()), 0.0);
  in.lse.assign(static_cast<size_t>(p.lse_elems()), 0.0);
  flash3::ref::reference_forward(p, in.q.data(), in.k.data(), in.v.data(), in.out.data(), in.lse.data());
  for (double& x : in.out) x = rnd(dt, x);  // what a forward in the dtype hands to the backward
  for (double& x : in.lse) x = static_cast<float>(x);
  return in;
}

// Runs flash3::backward `runs` times on the same device inputs; returns false (with the message) when the build has no
// kernel for the configuration.
bool run_backward(const ReferenceProblem& p, Precision dt, const Inputs& in, bool deterministic, int runs,
                  std::vector<Gradients>* results, std::string* not_supported) {
  const int64_t b = p.batch, h = p.heads, hk = p.heads_k, d = p.head_dim, dv = p.dv();
  const int64_t sq = p.seqlen_q, sk = p.seqlen_k, tq = p.rows_q(), tk = p.rows_k();
  const flash3::DType dtype = flash3_test::to_dtype(dt);
  DeviceBuffer q = flash3_test::upload_lowprec(in.q, dt), k = flash3_test::upload_lowprec(in.k, dt);
  DeviceBuffer v = flash3_test::upload_lowprec(in.v, dt), o = flash3_test::upload_lowprec(in.out, dt);
  DeviceBuffer dout = flash3_test::upload_lowprec(in.dout, dt);
  std::vector<float> lse_f(in.lse.begin(), in.lse.end());
  DeviceBuffer lse = DeviceBuffer::from(lse_f);
  DeviceBuffer dq(static_cast<size_t>(p.q_elems() * 2)), dk(static_cast<size_t>(p.k_elems() * 2));
  DeviceBuffer dvb(static_cast<size_t>(p.v_elems() * 2));

  flash3::BackwardArgs a;
  const bool vq = p.varlen_q(), vk = p.varlen_k();
  auto q_side = [&](void* ptr, int64_t dim) {
    return vq ? flash3::make_tensor(ptr, dtype, {tq, h, dim}) : flash3::make_tensor(ptr, dtype, {b, sq, h, dim});
  };
  auto k_side = [&](void* ptr, int64_t dim) {
    return vk ? flash3::make_tensor(ptr, dtype, {tk, hk, dim}) : flash3::make_tensor(ptr, dtype, {b, sk, hk, dim});
  };
  a.q = q_side(q.get(), d);
  a.out = q_side(o.get(), dv);
  a.dout = q_side(dout.get(), dv);
  a.dq = q_side(dq.get(), d);
  a.k = k_side(k.get(), d);
  a.v = k_side(v.get(), dv);
  a.dk = k_side(dk.get(), d);
  a.dv = k_side(dvb.get(), dv);
  a.lse = vq ? flash3::make_tensor(lse.get(), flash3::DType::kFloat32, {h, tq})
             : flash3::make_tensor(lse.get(), flash3::DType::kFloat32, {b, h, sq});
  DeviceBuffer cu_q, cu_k, used_q, used_k;
  if (vq || vk) {
    cu_q = DeviceBuffer::from(p.cu_seqlens_q);
    cu_k = DeviceBuffer::from(p.cu_seqlens_k);
    a.varlen.cu_seqlens_q = cu_q.as<const int32_t>();
    a.varlen.cu_seqlens_k = cu_k.as<const int32_t>();
    a.varlen.batch = p.batch;
    a.varlen.max_seqlen_q = max_len(p.cu_seqlens_q);
    a.varlen.max_seqlen_k = max_len(p.cu_seqlens_k);
  }
  if (!p.seqused_q.empty()) {
    used_q = DeviceBuffer::from(p.seqused_q);
    a.varlen.seqused_q = used_q.as<const int32_t>();
  }
  if (!p.seqused_k.empty()) {
    used_k = DeviceBuffer::from(p.seqused_k);
    a.varlen.seqused_k = used_k.as<const int32_t>();
  }
  a.options.softmax_scale = static_cast<float>(p.softmax_scale);
  a.options.causal = p.causal;
  a.options.window_left = p.window_left;
  a.options.window_right = p.window_right;
  a.options.softcap = static_cast<float>(p.softcap);
  a.options.deterministic = deterministic;

  DeviceBuffer workspace;
  for (int run = 0; run < runs; ++run) {
    dq.poison();
    dk.poison();
    dvb.poison();
    try {
      if (run == 0) {
        const int64_t ws = flash3::backward_workspace_size(a);
        workspace = DeviceBuffer(static_cast<size_t>(ws));
        workspace.poison();  // the backward must initialise its own scratch
        a.workspace = workspace.get();
        a.workspace_bytes = ws;
      }
      flash3::backward(a);
    } catch (const flash3::Error& e) {
      if (e.status() == flash3::Status::kNotSupported) {
        *not_supported = e.what();
        return false;
      }
      ADD_FAILURE() << "flash3::backward threw: " << e.what();
      return true;
    }
    flash3_test::sync_device("flash3::backward");
    Gradients g;
    g.dq_bits = dq.to_vector<uint16_t>(static_cast<size_t>(p.q_elems()));
    g.dk_bits = dk.to_vector<uint16_t>(static_cast<size_t>(p.k_elems()));
    g.dv_bits = dvb.to_vector<uint16_t>(static_cast<size_t>(p.v_elems()));
    g.dq = flash3_test::from_bits(g.dq_bits, dt);
    g.dk = flash3_test::from_bits(g.dk_bits, dt);
    g.dv = flash3_test::from_bits(g.dv_bits, dt);
    results->push_back(std::move(g));
  }
  return true;
}

// Checks one run's gradients against the double reference under the FA3 rule (every element: unused rows must be 0).
void check_gradients(const ReferenceProblem& p, Precision dt, const Inputs& in, const Gradients& g) {
  std::vector<double> rq(in.q.size()), rk(in.k.size()), rv(in.v.size());
  flash3::ref::reference_backward(p, in.q.data(), in.k.data(), in.v.data(), in.dout.data(), rq.data(), rk.data(),
                                  rv.data());
  std::vector<double> lq, lk, lv;
  naive_backward_lowprec(p, dt, in.q, in.k, in.v, in.dout, &lq, &lk, &lv);
  EXPECT_TRUE(flash3_test::fa3_close("dq", g.dq, rq, lq));
  EXPECT_TRUE(flash3_test::fa3_close("dk", g.dk, rk, lk));
  EXPECT_TRUE(flash3_test::fa3_close("dv", g.dv, rv, lv));
}

void run_and_check(const ReferenceProblem& p, Precision dt, const std::string& name) {
  SCOPED_TRACE(std::string(flash3::ref::precision_name(dt)) + " " + p.to_string());
  if (!flash3_test::has_gpu()) GTEST_SKIP() << flash3_test::no_gpu_reason();
  if (!flash3_test::no_sm90_reason().empty()) GTEST_SKIP() << flash3_test::no_sm90_reason();
  const Inputs in = make_inputs(p, dt, flash3_test::seed_from(name));
  std::vector<Gradients> g;
  std::string unsupported;
  if (!run_backward(p, dt, in, false, 1, &g, &unsupported)) GTEST_SKIP() << unsupported;
  if (g.empty()) return;
  check_gradients(p, dt, in, g[0]);
}

// The yardstick itself (CPU only): close to the double reference, but not equal to it (it must lose what a
// low-precision computation loses, or the tolerance it sets would be zero), for a causal softcapped GQA case.
TEST(BackwardYardstick, LowPrecisionNaiveIsCloseToReference) {
  ReferenceProblem p;
  p.batch = 2;
  p.seqlen_q = 70;
  p.seqlen_k = 90;
  p.heads = 4;
  p.heads_k = 2;
  p.head_dim = 64;
  p.head_dim_v = 64;
  p.causal = true;
  set_softcap(&p, true);
  for (Precision dt : {Precision::kFloat16, Precision::kBFloat16}) {
    const Inputs in = make_inputs(p, dt, 99);
    std::vector<double> rq(in.q.size()), rk(in.k.size()), rv(in.v.size()), lq, lk, lv;
    flash3::ref::reference_backward(p, in.q.data(), in.k.data(), in.v.data(), in.dout.data(), rq.data(), rk.data(),
                                    rv.data());
    naive_backward_lowprec(p, dt, in.q, in.k, in.v, in.dout, &lq, &lk, &lv);
    for (auto [ref, low, name] : {std::make_tuple(&rq, &lq, "dq"), std::make_tuple(&rk, &lk, "dk"),
                                  std::make_tuple(&rv, &lv, "dv")}) {
      double err = 0, mag = 0;
      for (size_t i = 0; i < ref->size(); ++i) {
        err = std::max(err, std::abs((*ref)[i] - (*low)[i]));
        mag = std::max(mag, std::abs((*ref)[i]));
      }
      EXPECT_GT(err, 0.0) << name;
      EXPECT_LT(err, 32 * flash3::ref::unit_roundoff(dt) * mag) << name << " " << flash3::ref::precision_name(dt);
    }
  }
}

// ---- FlashBackwardSmall ----------------------------------------------------------------------------------------------

struct SmallCase {
  Precision dtype;
  int d, dv;
  Mask mask;
  bool softcap;
  Gqa gqa;
  int sq, sk;
};

std::string small_name(const SmallCase& c) {
  const std::string hd = c.d == c.dv ? std::to_string(c.d) : std::to_string(c.d) + "x" + std::to_string(c.dv);
  return std::string(flash3::ref::precision_name(c.dtype)) + "_hd" + hd + "_" + mask_name(c.mask) +
         (c.softcap ? "_softcap30" : "") + "_" + gqa_name(c.gqa) + "_" + std::to_string(c.sq) + "x" +
         std::to_string(c.sk);
}

std::vector<SmallCase> small_cases() {
  // Shapes cycle with the other dimensions so every mask and head dim meets odd, square and sq != sk shapes.
  const int shapes[][2] = {{1, 1}, {17, 17}, {113, 203}, {203, 113}, {128, 128}, {64, 300}};
  std::vector<SmallCase> cases;
  int i = 0;
  for (Precision dt : {Precision::kFloat16, Precision::kBFloat16})
    for (auto hd : std::vector<std::pair<int, int>>{{64, 64}, {96, 96}, {128, 128}, {192, 192}, {256, 256},
                                                    {192, 128}, {40, 40}, {72, 72}, {136, 136}})
      for (Mask m : {Mask::kNone, Mask::kCausal, Mask::kWindow, Mask::kCausalWindow})
        for (bool sc : {false, true})
          for (Gqa g : {Gqa::kMha, Gqa::kGqa4, Gqa::kMqa}) {
            const auto& s = shapes[i++ % 6];
            cases.push_back({dt, hd.first, hd.second, m, sc, g, s[0], s[1]});
          }
  return cases;
}

class FlashBackwardSmall : public ::testing::TestWithParam<SmallCase> {};

TEST_P(FlashBackwardSmall, MatchesReference) {
  const SmallCase& c = GetParam();
  ReferenceProblem p;
  p.batch = 2;
  p.seqlen_q = c.sq;
  p.seqlen_k = c.sk;
  p.head_dim = c.d;
  p.head_dim_v = c.dv;
  set_mask(&p, c.mask);
  set_heads(&p, c.gqa);
  set_softcap(&p, c.softcap);
  run_and_check(p, c.dtype, small_name(c));
}

INSTANTIATE_TEST_SUITE_P(Grid, FlashBackwardSmall, ::testing::ValuesIn(small_cases()),
                         [](const ::testing::TestParamInfo<SmallCase>& info) { return small_name(info.param); });

// ---- FlashBackwardVarlen ---------------------------------------------------------------------------------------------

TEST(FlashBackwardVarlen, EmptySequencesAndSeqused) {
  for (Mask m : {Mask::kNone, Mask::kCausal, Mask::kCausalWindow}) {
    for (bool used : {false, true}) {
      ReferenceProblem p;
      p.batch = 5;
      p.heads = 4;
      p.heads_k = 2;
      p.head_dim = 128;
      p.head_dim_v = 128;
      // An empty sequence, one without keys, one without queries, and two ordinary ones.
      p.cu_seqlens_q = {0, 0, 37, 37, 237, 300};
      p.cu_seqlens_k = {0, 5, 5, 90, 390, 461};
      if (used) {
        p.seqused_q = {0, 30, 0, 150, 63};
        p.seqused_k = {3, 0, 80, 299, 20};
      }
      set_mask(&p, m);
      const std::string name = std::string("varlen_") + mask_name(m) + (used ? "_seqused" : "");
      SCOPED_TRACE(name);
      run_and_check(p, Precision::kBFloat16, name);
    }
  }
}

TEST(FlashBackwardVarlen, BatchModeSeqused) {
  ReferenceProblem p;
  p.batch = 3;
  p.seqlen_q = 150;
  p.seqlen_k = 270;
  p.heads = 2;
  p.heads_k = 1;
  p.head_dim = 64;
  p.head_dim_v = 64;
  p.seqused_q = {150, 0, 77};
  p.seqused_k = {200, 10, 0};
  p.causal = true;
  run_and_check(p, Precision::kFloat16, "batch_seqused");
}

// ---- FlashBackwardLarge ----------------------------------------------------------------------------------------------

struct LargeCase {
  Precision dtype;
  int d;
  Mask mask;
  int sq, sk;
  Gqa gqa;
};

class FlashBackwardLarge : public ::testing::TestWithParam<LargeCase> {};

TEST_P(FlashBackwardLarge, MatchesReference) {
  const LargeCase& c = GetParam();
  ReferenceProblem p;
  p.batch = 1;
  p.seqlen_q = c.sq;
  p.seqlen_k = c.sk;
  p.head_dim = c.d;
  p.head_dim_v = c.d;
  set_mask(&p, c.mask);
  p.heads = c.gqa == Gqa::kMha ? 2 : 4;
  p.heads_k = c.gqa == Gqa::kMha ? 2 : 1;
  run_and_check(p, c.dtype, "large");
}

INSTANTIATE_TEST_SUITE_P(Shapes, FlashBackwardLarge,
                         ::testing::Values(LargeCase{Precision::kBFloat16, 128, Mask::kNone, 1023, 1023, Gqa::kMha},
                                           LargeCase{Precision::kBFloat16, 128, Mask::kCausal, 1536, 1536, Gqa::kGqa4},
                                           LargeCase{Precision::kFloat16, 64, Mask::kCausal, 1000, 1777, Gqa::kMha},
                                           LargeCase{Precision::kFloat16, 96, Mask::kWindow, 1500, 1100, Gqa::kGqa4},
                                           LargeCase{Precision::kBFloat16, 64, Mask::kNone, 2049, 513, Gqa::kMqa},
                                           LargeCase{Precision::kBFloat16, 256, Mask::kCausal, 1100, 1100, Gqa::kGqa4},
                                           LargeCase{Precision::kFloat16, 192, Mask::kNone, 777, 1025, Gqa::kMha}),
                         [](const ::testing::TestParamInfo<LargeCase>& info) {
                           const LargeCase& c = info.param;
                           return std::string(flash3::ref::precision_name(c.dtype)) + "_hd" + std::to_string(c.d) +
                                  "_" + mask_name(c.mask) + "_" + std::to_string(c.sq) + "x" + std::to_string(c.sk) +
                                  "_" + gqa_name(c.gqa);
                         });

// ---- FlashBackwardDeterministic --------------------------------------------------------------------------------------

// Runs the deterministic backward several times: the gradients must be bitwise identical, and equal to the CPU
// reference under the FA3 rule (check_reference, small problems) or to the default mode up to summation order.
void check_deterministic(const ReferenceProblem& p, Precision dt, const std::string& name, bool check_reference) {
  SCOPED_TRACE(name + " " + p.to_string());
  if (!flash3_test::has_gpu()) GTEST_SKIP() << flash3_test::no_gpu_reason();
  if (!flash3_test::no_sm90_reason().empty()) GTEST_SKIP() << flash3_test::no_sm90_reason();
  const Inputs in = make_inputs(p, dt, flash3_test::seed_from(name));
  std::vector<Gradients> g;
  std::string unsupported;
  constexpr int kRuns = 8;
  if (!run_backward(p, dt, in, true, kRuns, &g, &unsupported)) GTEST_SKIP() << unsupported;
  ASSERT_EQ(g.size(), size_t(kRuns));
  for (int r = 1; r < kRuns; ++r) {
    EXPECT_TRUE(g[r].dq_bits == g[0].dq_bits) << "dq differs between run 0 and run " << r;
    EXPECT_TRUE(g[r].dk_bits == g[0].dk_bits) << "dk differs between run 0 and run " << r;
    EXPECT_TRUE(g[r].dv_bits == g[0].dv_bits) << "dv differs between run 0 and run " << r;
  }
  if (check_reference) {
    check_gradients(p, dt, in, g[0]);
    return;
  }
  // The same gradients as the default mode up to summation order (the default mode is checked against the
  // reference by the other suites; a CPU reference at this size would dominate the test time).
  std::vector<Gradients> fast;
  ASSERT_TRUE(run_backward(p, dt, in, false, 1, &fast, &unsupported));
  ASSERT_EQ(fast.size(), 1u);
  for (auto [a, b, grad] : {std::make_tuple(&g[0].dq, &fast[0].dq, "dq"),
                            std::make_tuple(&g[0].dk, &fast[0].dk, "dk"),
                            std::make_tuple(&g[0].dv, &fast[0].dv, "dv")}) {
    double diff = 0, mag = 0;
    for (size_t i = 0; i < a->size(); ++i) {
      ASSERT_TRUE(std::isfinite((*a)[i])) << grad << "[" << i << "]";
      diff = std::max(diff, std::abs((*a)[i] - (*b)[i]));
      mag = std::max(mag, std::abs((*b)[i]));
    }
    EXPECT_LE(diff, 4 * flash3::ref::unit_roundoff(dt) * mag) << grad << ": deterministic vs default mode";
  }
}

class FlashBackwardDeterministic : public ::testing::TestWithParam<std::pair<int, Mask>> {};

TEST_P(FlashBackwardDeterministic, BitwiseIdenticalRuns) {
  ReferenceProblem p;
  p.batch = 2;
  p.seqlen_q = 1536;  // 24 query blocks, each summed over up to 12 key blocks: plenty of chances to reorder
  p.seqlen_k = 1536;
  p.heads = 4;
  p.heads_k = 2;
  p.head_dim = GetParam().first;
  p.head_dim_v = GetParam().first;
  set_mask(&p, GetParam().second);
  check_deterministic(p, Precision::kBFloat16, "deterministic", false);
}

// Varlen in deterministic mode: the order of the additions follows each sequence's own lengths and mask (empty
// sequences, sequences without keys or queries, seqused), against the CPU reference; both tilings.
TEST(FlashBackwardDeterministicShapes, VarlenMatchesReference) {
  for (int d : {128, 256}) {
    for (Mask m : {Mask::kNone, Mask::kCausal, Mask::kWindow}) {
      ReferenceProblem p;
      p.batch = 5;
      p.heads = 4;
      p.heads_k = 2;
      p.head_dim = d;
      p.head_dim_v = d;
      p.cu_seqlens_q = {0, 0, 37, 37, 437, 600};
      p.cu_seqlens_k = {0, 5, 5, 90, 690, 861};
      p.seqused_q = {0, 30, 0, 350, 163};
      p.seqused_k = {3, 0, 80, 599, 120};
      set_mask(&p, m);
      check_deterministic(p, Precision::kBFloat16, "det_varlen_hd" + std::to_string(d) + "_" + mask_name(m), true);
      if (HasFatalFailure()) return;
    }
  }
}

// Unequal lengths (several key blocks per query block and the reverse, bottom-right masks), and heads with more key
// blocks than an H100 runs CTAs at once (132), so the summation order spans several chunks of co-resident CTAs.
TEST(FlashBackwardDeterministicShapes, UnequalLengthsAndManyKeyBlocks) {
  struct Case {
    int d, sq, sk;
    Mask mask;
  };
  for (Case c : {Case{64, 1000, 3000, Mask::kWindow}, Case{128, 3000, 700, Mask::kCausal},
                 Case{128, 256, 17000, Mask::kNone}, Case{256, 512, 9000, Mask::kNone},
                 Case{256, 600, 9000, Mask::kCausal}}) {
    ReferenceProblem p;
    p.batch = 1;
    p.seqlen_q = c.sq;
    p.seqlen_k = c.sk;
    p.heads = 2;
    p.heads_k = 1;
    p.head_dim = c.d;
    p.head_dim_v = c.d;
    set_mask(&p, c.mask);
    check_deterministic(p, Precision::kBFloat16,
                        "det_hd" + std::to_string(c.d) + "_" + std::to_string(c.sq) + "x" + std::to_string(c.sk) +
                            "_" + mask_name(c.mask),
                        false);
    if (HasFatalFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(HeadDims, FlashBackwardDeterministic,
                         ::testing::Values(std::make_pair(64, Mask::kNone), std::make_pair(96, Mask::kCausal),
                                           std::make_pair(128, Mask::kNone), std::make_pair(128, Mask::kCausalWindow),
                                           std::make_pair(192, Mask::kCausal), std::make_pair(256, Mask::kNone),
                                           std::make_pair(256, Mask::kCausal)),
                         [](const ::testing::TestParamInfo<std::pair<int, Mask>>& info) {
                           return "hd" + std::to_string(info.param.first) + "_" + mask_name(info.param.second);
                         });

}  // namespace
