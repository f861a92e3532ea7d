// End-to-end GPU tests of flash3::forward against the double reference, under FA3's tolerance rule
// (tests/cpp/common/tolerance.hpp): out within twice the error of a naive low-precision attention, lse within 1e-3
// relative, rows that see no key exactly out = 0 and lse = -inf.
//
//   FlashForwardSmall   the full grid dtype x head dims x mask x softcap x GQA, each over the small shapes
//                       (1,1) (17,17) (113,203) (203,113) (128,128), against the CPU reference
//   FlashForwardVarlen  varlen with an empty sequence, a sequence without keys, seqused_q/k and a padded out
//   FlashForwardLayout  q/k/v as views of a packed (b, s, 3, h, d) tensor, out with padded strides (the padding
//                       must stay untouched), lse left undefined
//   FlashForwardLarge   a sparse set of large shapes (1023, 4097, 16k keys) against the naive GPU reference
//   NaiveGpuReference   the naive GPU kernel itself against the CPU reference
//   FlashForwardErrors  an uncompiled kernel key gives kNotSupported; no device gives kNoDevice
//
// A kernel that this build does not contain (FLASH3_KERNELS subset) makes flash3::forward throw kNotSupported;
// the affected test then reports SKIPPED with that message instead of failing. Outputs are poisoned with NaN
// (0xFF bytes) before every run, so an element the kernel forgets to write fails the check.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "common/attention_cases.hpp"
#include "common/gpu_utils.hpp"
#include "common/naive_attention_gpu.hpp"
#include "common/test_data.hpp"
#include "common/tolerance.hpp"
#include "dispatch/fwd_dispatch.hpp"
#include "dispatch/kernel_registry.hpp"
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

// ---- case description ---------------------------------------------------------------------------------------------

struct HeadDims {
  int d, dv;
};
enum class Oracle { kCpu, kNaiveGpu };

const HeadDims kHeadDims[] = {{64, 64},   {96, 96}, {128, 128}, {192, 192}, {256, 256},
                              {192, 128}, {40, 40}, {72, 72},   {136, 136}};
const Mask kMasks[] = {Mask::kNone, Mask::kCausal, Mask::kWindow, Mask::kCausalWindow};
const Precision kDtypes[] = {Precision::kFloat16, Precision::kBFloat16};

std::string hd_name(HeadDims hd) {
  return hd.d == hd.dv ? "hd" + std::to_string(hd.d) : "hd" + std::to_string(hd.d) + "x" + std::to_string(hd.dv);
}

const char* status_name(flash3::Status s) {
  switch (s) {
    case flash3::Status::kSuccess:
      return "kSuccess";
    case flash3::Status::kInvalidArgument:
      return "kInvalidArgument";
    case flash3::Status::kNotSupported:
      return "kNotSupported";
    case flash3::Status::kNoDevice:
      return "kNoDevice";
    case flash3::Status::kCudaError:
      return "kCudaError";
    case flash3::Status::kInternalError:
      return "kInternalError";
  }
  return "unknown status";
}

ReferenceProblem batch_problem(int b, int sq, int sk, HeadDims hd) {
  ReferenceProblem p;
  p.batch = b;
  p.seqlen_q = sq;
  p.seqlen_k = sk;
  p.head_dim = hd.d;
  p.head_dim_v = hd.dv;
  return p;
}

flash3::AttentionOptions options_for(const ReferenceProblem& p) {
  flash3::AttentionOptions o;
  o.softmax_scale = static_cast<float>(p.softmax_scale);
  o.causal = p.causal;
  o.window_left = p.window_left;
  o.window_right = p.window_right;
  o.softcap = static_cast<float>(p.softcap);
  return o;
}

// ---- running flash3::forward and checking it ------------------------------------------------------------------------

// Rewrites the random inputs (q, k, v as the precision's values, in the problem's layout) before the run; values
// written must be representable (round with flash3::ref::round_to).
using InputEdit = std::function<void(const ReferenceProblem&, std::vector<double>& q, std::vector<double>& k,
                                     std::vector<double>& v)>;

struct Layout {
  bool packed_qkv = false;  // q, k, v as views of one (b, s, 3, h, d) tensor (batch mode, sq == sk, h == hk, d == dv)
  int out_pad = 0;          // extra elements after each head's dv outputs (must stay untouched)
  bool with_lse = true;     // false: lse left undefined
  InputEdit edit;           // optional
  // The workspace starts as a previous call leaves it (repair request clear); true: as 0xFF bytes, a fresh
  // allocation's garbage (the first fixed-offset call then repairs needlessly, and must still be right).
  bool garbage_workspace = false;
  // Give only the workspace the call cannot run without (none for unmasked calls: an older C ABI caller), not
  // forward_workspace_size(): the call must then take the exact softmax and still be right.
  bool required_workspace_only = false;
};

// The two softmax paths of the fp16 / bf16 forward (src/dispatch/fwd_dispatch.hpp): every check runs the call with
// the fixed offsets forced (whatever the size) and again with the exact softmax, against the same oracle.
constexpr flash3::FwdSoftmaxChoice kSoftmaxPaths[] = {flash3::FwdSoftmaxChoice::kFixedOffset,
                                                      flash3::FwdSoftmaxChoice::kExact};
const char* softmax_path_name(flash3::FwdSoftmaxChoice c) {
  return c == flash3::FwdSoftmaxChoice::kExact ? "exact softmax" : "fixed-offset softmax";
}

// Restores the process-wide softmax choice when a check returns.
struct SoftmaxChoiceScope {
  flash3::FwdSoftmaxChoice saved = flash3::forward_softmax_choice();
  explicit SoftmaxChoiceScope(flash3::FwdSoftmaxChoice c) { flash3::set_forward_softmax_choice(c); }
  ~SoftmaxChoiceScope() { flash3::set_forward_softmax_choice(saved); }
};

struct Outcome {
  bool not_supported = false;
  std::string message;
};

// Runs flash3::forward on random inputs for problem `p` and checks out and lse against `oracle`. Returns
// not_supported (with the library's message) when this build has no kernel for the configuration.
Outcome check_forward(const ReferenceProblem& p, Precision dt, Oracle oracle, uint64_t seed,
                      const Layout& layout = {}) {
  SCOPED_TRACE(std::string(flash3::ref::precision_name(dt)) + " " + p.to_string() +
               (layout.packed_qkv ? " packed-qkv" : "") + (layout.out_pad ? " padded-out" : "") +
               (layout.with_lse ? "" : " no-lse"));
  const int64_t b = p.batch, h = p.heads, hk = p.heads_k, d = p.head_dim, dv = p.dv();
  const int64_t sq = p.seqlen_q, sk = p.seqlen_k, tq = p.rows_q(), tk = p.rows_k();
  const flash3::DType dtype = flash3_test::to_dtype(dt);

  auto q = flash3_test::random_normal(p.q_elems(), dt, seed);
  auto k = flash3_test::random_normal(p.k_elems(), dt, seed + 1);
  auto v = flash3_test::random_normal(p.v_elems(), dt, seed + 2);
  if (layout.edit) layout.edit(p, q, k, v);

  flash3::ForwardArgs args;
  DeviceBuffer q_buf, k_buf, v_buf, packed_buf;
  if (!layout.packed_qkv || oracle == Oracle::kNaiveGpu) {
    q_buf = flash3_test::upload_lowprec(q, dt);
    k_buf = flash3_test::upload_lowprec(k, dt);
    v_buf = flash3_test::upload_lowprec(v, dt);
  }
  if (layout.packed_qkv) {
    if (p.varlen_q() || p.varlen_k() || sq != sk || h != hk || d != dv) {
      ADD_FAILURE() << "packed qkv needs batch mode with sq == sk, h == hk and d == dv";
      return {};
    }
    // packed (b, s, 3, h, d): q at slot 0, k at 1, v at 2 of every token.
    const auto qb = flash3_test::to_bits(q, dt), kb = flash3_test::to_bits(k, dt), vb = flash3_test::to_bits(v, dt);
    std::vector<uint16_t> packed(static_cast<size_t>(b * sq * 3 * h * d));
    for (int64_t t = 0; t < b * sq; ++t) {
      for (int64_t e = 0; e < h * d; ++e) {
        packed[(t * 3 + 0) * h * d + e] = qb[t * h * d + e];
        packed[(t * 3 + 1) * h * d + e] = kb[t * h * d + e];
        packed[(t * 3 + 2) * h * d + e] = vb[t * h * d + e];
      }
    }
    packed_buf = DeviceBuffer::from(packed);
    char* base = packed_buf.as<char>();
    const int64_t slot_bytes = h * d * 2;
    args.q = flash3::make_tensor(base, dtype, {b, sq, h, d}, {sq * 3 * h * d, 3 * h * d, d, 1});
    args.k = flash3::make_tensor(base + slot_bytes, dtype, {b, sq, h, d}, {sq * 3 * h * d, 3 * h * d, d, 1});
    args.v = flash3::make_tensor(base + 2 * slot_bytes, dtype, {b, sq, h, d}, {sq * 3 * h * d, 3 * h * d, d, 1});
  } else {
    args.q = p.varlen_q() ? flash3::make_tensor(q_buf.get(), dtype, {tq, h, d})
                          : flash3::make_tensor(q_buf.get(), dtype, {b, sq, h, d});
    args.k = p.varlen_k() ? flash3::make_tensor(k_buf.get(), dtype, {tk, hk, d})
                          : flash3::make_tensor(k_buf.get(), dtype, {b, sk, hk, d});
    args.v = p.varlen_k() ? flash3::make_tensor(v_buf.get(), dtype, {tk, hk, dv})
                          : flash3::make_tensor(v_buf.get(), dtype, {b, sk, hk, dv});
  }

  // out, possibly with padding after each head's outputs; poisoned so that unwritten elements read as NaN.
  const int64_t head_stride = dv + layout.out_pad, row_stride = h * head_stride;
  DeviceBuffer out_buf(static_cast<size_t>(tq * row_stride * 2));
  out_buf.poison();
  args.out = p.varlen_q() ? flash3::make_tensor(out_buf.get(), dtype, {tq, h, dv}, {row_stride, head_stride, 1})
                          : flash3::make_tensor(out_buf.get(), dtype, {b, sq, h, dv},
                                                {sq * row_stride, row_stride, head_stride, 1});
  DeviceBuffer lse_buf(static_cast<size_t>(p.lse_elems() * 4));
  lse_buf.poison();
  if (layout.with_lse) {
    args.lse = p.varlen_q() ? flash3::make_tensor(lse_buf.get(), flash3::DType::kFloat32, {h, tq})
                            : flash3::make_tensor(lse_buf.get(), flash3::DType::kFloat32, {b, h, sq});
  }

  DeviceBuffer cu_q, cu_k, used_q, used_k;
  if (p.varlen_q() || p.varlen_k()) {
    if (p.varlen_q()) cu_q = DeviceBuffer::from(p.cu_seqlens_q);
    if (p.varlen_k()) cu_k = DeviceBuffer::from(p.cu_seqlens_k);
    args.varlen.cu_seqlens_q = cu_q.as<const int32_t>();
    args.varlen.cu_seqlens_k = cu_k.as<const int32_t>();
    args.varlen.batch = p.batch;
    args.varlen.max_seqlen_q = p.varlen_q() ? max_len(p.cu_seqlens_q) : p.seqlen_q;
    args.varlen.max_seqlen_k = p.varlen_k() ? max_len(p.cu_seqlens_k) : p.seqlen_k;
  }
  if (!p.seqused_q.empty()) {
    used_q = DeviceBuffer::from(p.seqused_q);
    args.varlen.seqused_q = used_q.as<const int32_t>();
  }
  if (!p.seqused_k.empty()) {
    used_k = DeviceBuffer::from(p.seqused_k);
    args.varlen.seqused_k = used_k.as<const int32_t>();
  }
  args.options = options_for(p);

  // The oracle.
  std::vector<double> ref(static_cast<size_t>(p.out_elems()), 0.0), low(ref.size(), 0.0);
  std::vector<double> ref_lse(static_cast<size_t>(p.lse_elems()), 0.0);
  if (oracle == Oracle::kCpu) {
    flash3::ref::reference_forward(p, q.data(), k.data(), v.data(), ref.data(), ref_lse.data());
    flash3::ref::reference_forward_lowprec(p, dt, q.data(), k.data(), v.data(), low.data(), nullptr);
  } else {
    DeviceBuffer ref_d(ref.size() * sizeof(double)), low_d(low.size() * sizeof(double));
    DeviceBuffer lse_d(ref_lse.size() * sizeof(double));
    flash3_test::naive_attention_forward(p, dt, flash3_test::NaiveMode::kReference, q_buf.get(), k_buf.get(),
                                         v_buf.get(), ref_d.as<double>(), lse_d.as<double>());
    flash3_test::naive_attention_forward(p, dt, flash3_test::NaiveMode::kLowPrecision, q_buf.get(), k_buf.get(),
                                         v_buf.get(), low_d.as<double>(), nullptr);
    if (!ref.empty()) ref_d.download(ref.data(), ref.size() * sizeof(double));
    if (!low.empty()) low_d.download(low.data(), low.size() * sizeof(double));
    if (!ref_lse.empty()) lse_d.download(ref_lse.data(), ref_lse.size() * sizeof(double));
  }

  const std::vector<char> out_used = flash3_test::used_out_mask(p);
  const std::vector<char> lse_used = flash3_test::used_lse_mask(p);

  // One workspace for both runs, as a caller would reuse it; not zeroed (the library must not need that).
  DeviceBuffer workspace;
  for (const flash3::FwdSoftmaxChoice path : kSoftmaxPaths) {
    SCOPED_TRACE(softmax_path_name(path));
    SoftmaxChoiceScope const choice(path);
    out_buf.poison();
    lse_buf.poison();
    try {
      const int64_t ws = layout.required_workspace_only ? flash3::forward_workspace_required_bytes(args.options)
                                                        : flash3::forward_workspace_size(args);
      if (workspace.get() == nullptr && ws > 0) {
        workspace = DeviceBuffer(static_cast<size_t>(ws));
        workspace.fill_bytes(layout.garbage_workspace ? 0xFF : 0);
      }
      args.workspace = workspace.get();
      args.workspace_bytes = ws;
      flash3::forward(args);
    } catch (const flash3::Error& e) {
      if (e.status() == flash3::Status::kNotSupported) return {true, e.what()};
      ADD_FAILURE() << "flash3::forward threw " << status_name(e.status()) << ": " << e.what();
      return {};
    }
    flash3_test::sync_device("flash3::forward");

    // Download; check the padding survived; gather the (b|t, s, h, dv) view into a contiguous vector.
    const std::vector<uint16_t> raw = out_buf.to_vector<uint16_t>(static_cast<size_t>(tq * row_stride));
    std::vector<double> out(static_cast<size_t>(p.out_elems()));
    int64_t pad_written = 0, first_pad_written = -1;
    for (int64_t row = 0; row < tq; ++row) {
      for (int64_t hh = 0; hh < h; ++hh) {
        const int64_t base = row * row_stride + hh * head_stride;
        for (int64_t c = 0; c < dv; ++c) out[(row * h + hh) * dv + c] = flash3::ref::from_bits(dt, raw[base + c]);
        for (int64_t c = dv; c < head_stride; ++c) {
          if (raw[base + c] != 0xFFFF) {
            if (first_pad_written < 0) first_pad_written = base + c;
            ++pad_written;
          }
        }
      }
    }
    EXPECT_EQ(pad_written, 0) << "flash3::forward wrote " << pad_written
                              << " elements of out's padding (between heads); the first at element "
                              << first_pad_written;
    const std::vector<double> lse = flash3_test::download_float(lse_buf, static_cast<size_t>(p.lse_elems()));
    EXPECT_TRUE(flash3_test::fa3_close("out", out, ref, low, &out_used, flash3_test::out_locator(p)));
    if (layout.with_lse) {
      EXPECT_TRUE(flash3_test::lse_close("lse", lse, ref_lse, &lse_used, flash3_test::lse_locator(p)));
    }
    if (path == flash3::FwdSoftmaxChoice::kFixedOffset &&
        args.workspace_bytes >= flash3::kFwdRepairStateOffset + int64_t(sizeof(flash3::FwdRepairState))) {
      // After a fixed-offset call (and its repair launch) the repair request is clear, whatever the workspace held.
      flash3::FwdRepairState state{};
      workspace.download(&state, sizeof(state), flash3::kFwdRepairStateOffset);
      EXPECT_EQ(state.needed, 0u) << "the repair launch left its request set";
    }
  }
  return {};
}

// ---- the small full grid against the CPU reference -----------------------------------------------------------------

struct SmallCase {
  Precision dtype;
  HeadDims hd;
  Mask mask;
  bool softcap;
  Gqa gqa;
};

std::string small_name(const SmallCase& c) {
  return std::string(flash3::ref::precision_name(c.dtype)) + "_" + hd_name(c.hd) + "_" + mask_name(c.mask) +
         (c.softcap ? "_softcap30" : "") + "_" + gqa_name(c.gqa);
}

std::vector<SmallCase> small_cases() {
  std::vector<SmallCase> cases;
  for (Precision dt : kDtypes)
    for (HeadDims hd : kHeadDims)
      for (Mask m : kMasks)
        for (bool sc : {false, true})
          for (Gqa g : {Gqa::kMha, Gqa::kGqa4, Gqa::kMqa}) cases.push_back({dt, hd, m, sc, g});
  return cases;
}

void PrintTo(const SmallCase& c, std::ostream* os) { *os << small_name(c); }

class FlashForwardSmall : public ::testing::TestWithParam<SmallCase> {};

TEST_P(FlashForwardSmall, MatchesCpuReference) {
  FLASH3_REQUIRE_SM90();
  const SmallCase c = GetParam();
  const std::pair<int, int> shapes[] = {{1, 1}, {17, 17}, {113, 203}, {203, 113}, {128, 128}};
  for (auto [sq, sk] : shapes) {
    ReferenceProblem p = batch_problem(2, sq, sk, c.hd);
    set_heads(&p, c.gqa);
    set_mask(&p, c.mask);
    set_softcap(&p, c.softcap);
    const std::string id = small_name(c) + "_" + std::to_string(sq) + "x" + std::to_string(sk);
    const Outcome r = check_forward(p, c.dtype, Oracle::kCpu, flash3_test::seed_from(id));
    if (r.not_supported) GTEST_SKIP() << "not in this build (FLASH3_KERNELS subset?): " << r.message;
    if (HasFailure()) return;  // one failing shape is enough to read
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, FlashForwardSmall, ::testing::ValuesIn(small_cases()),
                         [](const ::testing::TestParamInfo<SmallCase>& param_info) {
                           return small_name(param_info.param);
                         });

// ---- varlen ---------------------------------------------------------------------------------------------------------

struct VarlenCase {
  Precision dtype;
  HeadDims hd;
  Mask mask;
  bool softcap;
};

std::string varlen_name(const VarlenCase& c) {
  return std::string(flash3::ref::precision_name(c.dtype)) + "_" + hd_name(c.hd) + "_" + mask_name(c.mask) +
         (c.softcap ? "_softcap30" : "");
}

std::vector<VarlenCase> varlen_cases() {
  std::vector<VarlenCase> cases;
  for (Precision dt : kDtypes)
    for (HeadDims hd : kHeadDims)
      for (Mask m : kMasks)
        for (bool sc : {false, true}) cases.push_back({dt, hd, m, sc});
  return cases;
}

void PrintTo(const VarlenCase& c, std::ostream* os) { *os << varlen_name(c); }

class FlashForwardVarlen : public ::testing::TestWithParam<VarlenCase> {};

TEST_P(FlashForwardVarlen, MatchesCpuReference) {
  FLASH3_REQUIRE_SM90();
  const VarlenCase c = GetParam();
  ReferenceProblem p;
  p.batch = 5;
  p.head_dim = c.hd.d;
  p.head_dim_v = c.hd.dv;
  set_heads(&p, Gqa::kGqa4);
  set_mask(&p, c.mask);
  set_softcap(&p, c.softcap);
  // Query lengths 17, 0 (empty), 113, 64, 1; key lengths 33, 5, 203, 0 (every row fully masked), 128.
  p.cu_seqlens_q = {0, 17, 17, 130, 194, 195};
  p.cu_seqlens_k = {0, 33, 38, 241, 241, 369};
  Outcome r = check_forward(p, c.dtype, Oracle::kCpu, flash3_test::seed_from(varlen_name(c)));
  if (r.not_supported) GTEST_SKIP() << "not in this build (FLASH3_KERNELS subset?): " << r.message;
  if (HasFailure()) return;
  // Only part of each sequence used; rows past seqused_q are not compared. out gets padding between heads.
  p.seqused_q = {13, 0, 113, 40, 1};
  p.seqused_k = {33, 3, 150, 0, 77};
  Layout padded;
  padded.out_pad = 8;
  r = check_forward(p, c.dtype, Oracle::kCpu, flash3_test::seed_from(varlen_name(c) + "_seqused"), padded);
  if (r.not_supported) GTEST_SKIP() << "not in this build (FLASH3_KERNELS subset?): " << r.message;
}

INSTANTIATE_TEST_SUITE_P(Grid, FlashForwardVarlen, ::testing::ValuesIn(varlen_cases()),
                         [](const ::testing::TestParamInfo<VarlenCase>& param_info) {
                           return varlen_name(param_info.param);
                         });

// ---- layouts: packed qkv, padded out, no lse ------------------------------------------------------------------------

struct LayoutCase {
  Precision dtype;
  int hd;
  Mask mask;
};

std::string layout_name(const LayoutCase& c) {
  return std::string(flash3::ref::precision_name(c.dtype)) + "_hd" + std::to_string(c.hd) + "_" + mask_name(c.mask);
}

std::vector<LayoutCase> layout_cases() {
  std::vector<LayoutCase> cases;
  for (Precision dt : kDtypes)
    for (int hd : {64, 128, 256})
      for (Mask m : {Mask::kNone, Mask::kCausal}) cases.push_back({dt, hd, m});
  return cases;
}

void PrintTo(const LayoutCase& c, std::ostream* os) { *os << layout_name(c); }

class FlashForwardLayout : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(FlashForwardLayout, PackedQkvAndPaddedOut) {
  FLASH3_REQUIRE_SM90();
  const LayoutCase c = GetParam();
  ReferenceProblem p = batch_problem(2, 203, 203, {c.hd, c.hd});
  p.heads = p.heads_k = 4;
  set_mask(&p, c.mask);
  Layout layout;
  layout.packed_qkv = true;
  layout.out_pad = 8;
  const Outcome r = check_forward(p, c.dtype, Oracle::kCpu, flash3_test::seed_from(layout_name(c)), layout);
  if (r.not_supported) GTEST_SKIP() << "not in this build (FLASH3_KERNELS subset?): " << r.message;
}

TEST_P(FlashForwardLayout, RequiredWorkspaceOnly) {
  FLASH3_REQUIRE_SM90();
  const LayoutCase c = GetParam();
  ReferenceProblem p = batch_problem(1, 300, 1100, {c.hd, c.hd});  // 9 key blocks: the fixed offsets would apply
  p.heads = p.heads_k = 2;
  set_mask(&p, c.mask);
  Layout layout;
  layout.required_workspace_only = true;
  const Outcome r = check_forward(p, c.dtype, Oracle::kCpu, flash3_test::seed_from(layout_name(c) + "_minws"), layout);
  if (r.not_supported) GTEST_SKIP() << "not in this build (FLASH3_KERNELS subset?): " << r.message;
}

TEST_P(FlashForwardLayout, WithoutLse) {
  FLASH3_REQUIRE_SM90();
  const LayoutCase c = GetParam();
  ReferenceProblem p = batch_problem(1, 77, 130, {c.hd, c.hd});
  p.heads = 2;
  p.heads_k = 1;
  set_mask(&p, c.mask);
  Layout layout;
  layout.with_lse = false;
  const Outcome r = check_forward(p, c.dtype, Oracle::kCpu, flash3_test::seed_from(layout_name(c) + "_nolse"), layout);
  if (r.not_supported) GTEST_SKIP() << "not in this build (FLASH3_KERNELS subset?): " << r.message;
}

INSTANTIATE_TEST_SUITE_P(Grid, FlashForwardLayout, ::testing::ValuesIn(layout_cases()),
                         [](const ::testing::TestParamInfo<LayoutCase>& param_info) {
                           return layout_name(param_info.param);
                         });

// ---- large shapes against the naive GPU reference -------------------------------------------------------------------

struct LargeCase {
  const char* name;
  Precision dtype;
  HeadDims hd;
  Mask mask;
  bool softcap;
  int batch, heads, heads_k, sq, sk;
  bool varlen;  // when set: the fixed varlen layout below (sq, sk unused)
  int window_left = -2, window_right = -2;  // >= -1: replaces the mask's window
};

std::vector<LargeCase> large_cases() {
  const Precision f16 = Precision::kFloat16, b16 = Precision::kBFloat16;
  return {
      {"bf16_hd64_nomask_1023", b16, {64, 64}, Mask::kNone, false, 2, 8, 8, 1023, 1023, false},
      {"fp16_hd64_causal_gqa4_1023", f16, {64, 64}, Mask::kCausal, false, 2, 8, 2, 1023, 1023, false},
      {"bf16_hd96_window_1023", b16, {96, 96}, Mask::kWindow, false, 2, 4, 4, 1023, 1023, false},
      {"fp16_hd128_nomask_softcap_mqa_1023", f16, {128, 128}, Mask::kNone, true, 2, 4, 1, 1023, 1023, false},
      {"bf16_hd128_causal_1023", b16, {128, 128}, Mask::kCausal, false, 2, 8, 8, 1023, 1023, false},
      {"bf16_hd128_causal_4097", b16, {128, 128}, Mask::kCausal, false, 1, 8, 8, 4097, 4097, false},
      {"fp16_hd128_nomask_gqa4_4097", f16, {128, 128}, Mask::kNone, false, 1, 8, 2, 4097, 4097, false},
      {"bf16_hd128_causal_4097x1023", b16, {128, 128}, Mask::kCausal, false, 1, 4, 4, 4097, 1023, false},
      {"bf16_hd192_causal_left64_1023", b16, {192, 192}, Mask::kCausalWindow, false, 2, 4, 4, 1023, 1023, false},
      {"fp16_hd192x128_causal_gqa_1023", f16, {192, 128}, Mask::kCausal, false, 2, 4, 2, 1023, 1023, false},
      {"bf16_hd256_nomask_mqa_1023", b16, {256, 256}, Mask::kNone, false, 2, 8, 1, 1023, 1023, false},
      {"fp16_hd256_causal_softcap_1023", f16, {256, 256}, Mask::kCausal, true, 2, 4, 4, 1023, 1023, false},
      {"bf16_hd256_window_4097", b16, {256, 256}, Mask::kWindow, false, 1, 4, 4, 4097, 4097, false},
      {"bf16_hd40_causal_1023", b16, {40, 40}, Mask::kCausal, false, 2, 4, 4, 1023, 1023, false},
      {"fp16_hd72_nomask_1023", f16, {72, 72}, Mask::kNone, false, 2, 4, 2, 1023, 1023, false},
      {"bf16_hd136_window_softcap_1023", b16, {136, 136}, Mask::kWindow, true, 2, 4, 4, 1023, 1023, false},
      {"bf16_hd128_nomask_257x16384", b16, {128, 128}, Mask::kNone, false, 1, 4, 1, 257, 16384, false},
      {"fp16_hd64_causal_1000x16000", f16, {64, 64}, Mask::kCausal, false, 1, 4, 4, 1000, 16000, false},
      // hdim 64 masked at >= 3072 queries and keys: the long-sequence tile (192 x 128, tile_config.hpp)
      {"bf16_hd64_causal_gqa2_4097", b16, {64, 64}, Mask::kCausal, false, 1, 4, 2, 4097, 4097, false},
      {"fp16_hd64_causal_3073", f16, {64, 64}, Mask::kCausal, false, 1, 4, 4, 3073, 3073, false},
      {"fp16_hd64_causal_softcap_4100x8191", f16, {64, 64}, Mask::kCausal, true, 1, 2, 2, 4100, 8191, false},
      {"bf16_hd64_causal_varlen", b16, {64, 64}, Mask::kCausal, false, 4, 4, 2, 0, 0, true},
      {"bf16_hd64_window4500_4097x6000", b16, {64, 64}, Mask::kWindow, false, 1, 4, 4, 4097, 6000, false, 4500, 100},
      {"bf16_hd128_causal_varlen", b16, {128, 128}, Mask::kCausal, false, 4, 8, 2, 0, 0, true},
      {"fp16_hd64_window_softcap_varlen", f16, {64, 64}, Mask::kWindow, true, 4, 4, 4, 0, 0, true},
      // Bottom-right causal with 64 more keys than queries: the first (highest) key block a tile sees holds no key
      // for its upper 64 rows, whose softmax offsets are then fixed a block later (softmax.hpp).
      {"bf16_hd128_causal_1000x1064", b16, {128, 128}, Mask::kCausal, false, 1, 4, 4, 1000, 1064, false},
      {"fp16_hd64_causal_softcap_1000x1064", f16, {64, 64}, Mask::kCausal, true, 1, 4, 2, 1000, 1064, false},
      // hdim 192 / 256 stage O in V's shared memory (kOStagingInV): several tiles per CTA (the stage and barrier
      // phases carried from tile to tile), tiles of one key block, and tiles with none (bottom-right causal with
      // fewer keys than queries; varlen with an empty key side), whose rows go out from registers.
      {"bf16_hd256_nomask_gqa2_4097", b16, {256, 256}, Mask::kNone, false, 2, 8, 4, 4097, 4097, false},
      {"fp16_hd256_causal_2000x70", f16, {256, 256}, Mask::kCausal, false, 2, 8, 8, 2000, 70, false},
      {"bf16_hd256_causal_varlen", b16, {256, 256}, Mask::kCausal, false, 4, 8, 2, 0, 0, true},
      {"fp16_hd192_nomask_2049", f16, {192, 192}, Mask::kNone, false, 2, 8, 8, 2049, 2049, false},
      {"bf16_hd192_causal_varlen", b16, {192, 192}, Mask::kCausal, false, 4, 8, 2, 0, 0, true},
      {"fp16_hd192_causal_softcap_2000x100", f16, {192, 192}, Mask::kCausal, true, 2, 8, 4, 2000, 100, false},
      // hdim 96 / 128 masked with several tiles per CTA (the per-warpgroup tile hand-over, pipeline phases carried
      // across tiles), tiles of one or two key blocks between tiles with none (bottom-right causal, fewer keys).
      {"bf16_hd128_causal_3000x150", b16, {128, 128}, Mask::kCausal, false, 2, 8, 8, 3000, 150, false},
      {"fp16_hd96_causal_softcap_3001", f16, {96, 96}, Mask::kCausal, true, 2, 6, 3, 3001, 3001, false},
      {"fp16_hd128_window_2500", f16, {128, 128}, Mask::kWindow, false, 2, 8, 8, 2500, 2500, false, 200, 0},
  };
}

void PrintTo(const LargeCase& c, std::ostream* os) { *os << c.name; }

class FlashForwardLarge : public ::testing::TestWithParam<LargeCase> {};

TEST_P(FlashForwardLarge, MatchesNaiveGpuReference) {
  FLASH3_REQUIRE_SM90();
  const LargeCase c = GetParam();
  ReferenceProblem p = batch_problem(c.batch, c.sq, c.sk, c.hd);
  p.heads = c.heads;
  p.heads_k = c.heads_k;
  set_mask(&p, c.mask);
  if (c.window_left >= -1) p.window_left = c.window_left;
  if (c.window_right >= -1) p.window_right = c.window_right;
  set_softcap(&p, c.softcap);
  if (c.varlen) {
    // Lengths q: 1023, 0, 4097, 511; k: 2000, 17, 4097, 0; with seqused on both sides.
    p.cu_seqlens_q = {0, 1023, 1023, 5120, 5631};
    p.cu_seqlens_k = {0, 2000, 2017, 6114, 6114};
    p.seqused_q = {1000, 0, 4097, 511};
    p.seqused_k = {2000, 17, 3001, 0};
  }
  const Outcome r = check_forward(p, c.dtype, Oracle::kNaiveGpu, flash3_test::seed_from(c.name));
  if (r.not_supported) GTEST_SKIP() << "not in this build (FLASH3_KERNELS subset?): " << r.message;
}

INSTANTIATE_TEST_SUITE_P(Sparse, FlashForwardLarge, ::testing::ValuesIn(large_cases()),
                         [](const ::testing::TestParamInfo<LargeCase>& param_info) {
                           return std::string(param_info.param.name);
                         });

// ---- the naive GPU reference against the CPU reference --------------------------------------------------------------

// ---- the fixed-offset softmax on inputs that move the row max after the first block ---------------------------------

// Keys whose score jumps above the rest: key `key` (of every batch and kv head) gets k = amplitude in every
// component, and q gets a positive mean (q = 1 + q / 2), so that key's score is ~amplitude * sqrt(d) (natural units)
// against ~N(0, 1) for the others. The kernels walk key blocks from the last to the first, so jumps at low keys
// arrive after the offsets are fixed.
struct ScoreJump {
  int key;
  double amplitude;
};

struct JumpCase {
  const char* name;
  Precision dtype;
  int head_dim;
  Mask mask;
  int heads, sq, sk;
  std::vector<ScoreJump> jumps;
  bool garbage_workspace;
};

std::vector<JumpCase> jump_cases() {
  const Precision f16 = Precision::kFloat16, b16 = Precision::kBFloat16;
  // Amplitudes 0.5 / 0.9 / 1.4 at hdim 128: scores ~5.7 / 10 / 16 (natural units), i.e. up to ~19 log2 units above
  // a first block's max (~3): rebased blocks (fp16 P overflows past 16 log2 units without it), the big keys still
  // leaving the rest a visible share of the row's mass. 10: ~160 log2 units, beyond fp32's P: the repair launch.
  // 160 tiles of 128 rows for the causal cases: more tiles than SMs, so both launches draw tiles from their counters.
  const std::vector<ScoreJump> rebase = {{700, 0.5}, {300, 0.9}, {5, 1.4}};
  const std::vector<ScoreJump> overflow = {{500, 10.0}};
  return {
      {"bf16_hd128_nomask_rebase", b16, 128, Mask::kNone, 4, 256, 1024, rebase, false},
      {"fp16_hd128_nomask_rebase", f16, 128, Mask::kNone, 4, 256, 1024, rebase, false},
      {"fp16_hd64_causal_rebase", f16, 64, Mask::kCausal, 20, 1024, 1024, rebase, false},
      {"bf16_hd256_window_rebase", b16, 256, Mask::kCausalWindow, 4, 1024, 1024, {{900, 0.6}, {860, 0.9}}, false},
      {"bf16_hd128_nomask_overflow", b16, 128, Mask::kNone, 4, 256, 1024, overflow, false},
      {"fp16_hd128_causal_overflow", f16, 128, Mask::kCausal, 20, 1024, 1024, overflow, false},
      {"bf16_hd64_nomask_garbage_workspace", b16, 64, Mask::kNone, 4, 256, 1024, rebase, true},
  };
}

void PrintTo(const JumpCase& c, std::ostream* os) { *os << c.name; }

class FlashForwardScoreJumps : public ::testing::TestWithParam<JumpCase> {};

TEST_P(FlashForwardScoreJumps, MatchesNaiveGpuReference) {
  FLASH3_REQUIRE_SM90();
  const JumpCase c = GetParam();
  ReferenceProblem p = batch_problem(1, c.sq, c.sk, {c.head_dim, c.head_dim});
  p.heads = c.heads;
  p.heads_k = c.heads;
  set_mask(&p, c.mask);
  Layout layout;
  layout.garbage_workspace = c.garbage_workspace;
  const Precision dt = c.dtype;
  layout.edit = [&c, dt](const ReferenceProblem& pr, std::vector<double>& q, std::vector<double>& k,
                         std::vector<double>&) {
    for (double& x : q) x = flash3::ref::round_to(dt, static_cast<float>(1.0 + 0.5 * x));
    const int64_t d = pr.head_dim, hk = pr.heads_k;
    for (const ScoreJump& j : c.jumps) {
      const float a = flash3::ref::round_to(dt, static_cast<float>(j.amplitude));
      for (int64_t b = 0; b < pr.batch; ++b) {
        for (int64_t hh = 0; hh < hk; ++hh) {
          for (int64_t e = 0; e < d; ++e) k[((b * pr.seqlen_k + j.key) * hk + hh) * d + e] = a;
        }
      }
    }
  };
  const Outcome r = check_forward(p, dt, Oracle::kNaiveGpu, flash3_test::seed_from(c.name), layout);
  if (r.not_supported) GTEST_SKIP() << "not in this build (FLASH3_KERNELS subset?): " << r.message;
}

INSTANTIATE_TEST_SUITE_P(Cases, FlashForwardScoreJumps, ::testing::ValuesIn(jump_cases()),
                         [](const ::testing::TestParamInfo<JumpCase>& param_info) {
                           return std::string(param_info.param.name);
                         });

struct NaiveCase {
  const char* name;
  Precision dtype;
  ReferenceProblem problem;
};

std::vector<NaiveCase> naive_cases() {
  std::vector<NaiveCase> cases;
  ReferenceProblem p = batch_problem(2, 113, 203, {64, 64});
  p.heads = 4;
  p.heads_k = 2;
  cases.push_back({"bf16_hd64_nomask_gqa", Precision::kBFloat16, p});
  p.causal = true;
  cases.push_back({"fp16_hd64_causal_gqa", Precision::kFloat16, p});
  p = batch_problem(2, 203, 113, {192, 128});
  p.heads = 3;
  p.heads_k = 1;
  set_mask(&p, Mask::kCausal);
  cases.push_back({"bf16_hd192x128_causal_mqa_sq_gt_sk", Precision::kBFloat16, p});
  p = batch_problem(1, 150, 1500, {256, 256});
  p.heads = p.heads_k = 2;
  set_mask(&p, Mask::kWindow);
  set_softcap(&p, true);
  cases.push_back({"fp16_hd256_window_softcap_1500keys", Precision::kFloat16, p});
  p = batch_problem(1, 40, 2100, {40, 40});
  set_mask(&p, Mask::kCausalWindow);
  cases.push_back({"bf16_hd40_causal_left64_2100keys", Precision::kBFloat16, p});
  p = ReferenceProblem();
  p.batch = 4;
  p.head_dim = p.head_dim_v = 72;
  p.heads = 4;
  p.heads_k = 2;
  p.cu_seqlens_q = {0, 17, 17, 130, 194};
  p.cu_seqlens_k = {0, 33, 38, 241, 241};
  p.seqused_q = {13, 0, 113, 40};
  p.seqused_k = {33, 3, 150, 0};
  set_mask(&p, Mask::kCausal);
  set_softcap(&p, true);
  cases.push_back({"bf16_hd72_varlen_seqused_causal_softcap", Precision::kBFloat16, p});
  return cases;
}

void PrintTo(const NaiveCase& c, std::ostream* os) { *os << c.name << " " << c.problem.to_string(); }

class NaiveGpuReference : public ::testing::TestWithParam<NaiveCase> {};

TEST_P(NaiveGpuReference, MatchesCpuReference) {
  FLASH3_REQUIRE_GPU();
  const NaiveCase c = GetParam();
  const ReferenceProblem& p = c.problem;
  SCOPED_TRACE(p.to_string());
  const uint64_t seed = flash3_test::seed_from(c.name);
  const auto q = flash3_test::random_normal(p.q_elems(), c.dtype, seed);
  const auto k = flash3_test::random_normal(p.k_elems(), c.dtype, seed + 1);
  const auto v = flash3_test::random_normal(p.v_elems(), c.dtype, seed + 2);
  std::vector<double> ref(p.out_elems(), 0.0), ref_lse(p.lse_elems(), 0.0), low(p.out_elems(), 0.0),
      low_lse(p.lse_elems(), 0.0);
  flash3::ref::reference_forward(p, q.data(), k.data(), v.data(), ref.data(), ref_lse.data());
  flash3::ref::reference_forward_lowprec(p, c.dtype, q.data(), k.data(), v.data(), low.data(), low_lse.data());

  DeviceBuffer qd = flash3_test::upload_lowprec(q, c.dtype), kd = flash3_test::upload_lowprec(k, c.dtype),
               vd = flash3_test::upload_lowprec(v, c.dtype);
  const size_t on = ref.size(), ln = ref_lse.size();
  for (auto mode : {flash3_test::NaiveMode::kReference, flash3_test::NaiveMode::kLowPrecision}) {
    const bool is_low = mode == flash3_test::NaiveMode::kLowPrecision;
    SCOPED_TRACE(is_low ? "low-precision mode" : "reference mode");
    // Sentinel-filled outputs: unused rows must keep the sentinel (bytes 0x7F: a large finite double).
    DeviceBuffer out_d(on * sizeof(double)), lse_d(ln * sizeof(double));
    out_d.fill_bytes(0x7F);
    lse_d.fill_bytes(0x7F);
    flash3_test::naive_attention_forward(p, c.dtype, mode, qd.get(), kd.get(), vd.get(), out_d.as<double>(),
                                         lse_d.as<double>());
    const auto out = out_d.to_vector<double>(on), lse = lse_d.to_vector<double>(ln);
    const auto& want = is_low ? low : ref;
    const auto& want_lse = is_low ? low_lse : ref_lse;
    const auto out_used = flash3_test::used_out_mask(p), lse_used = flash3_test::used_lse_mask(p);
    double sentinel;
    std::memset(&sentinel, 0x7F, sizeof(sentinel));
    // Reference mode: fp64 throughout, only the summation order differs (and the libm), so 1e-12 is plenty.
    // Low mode: fp32 sums in another order flip the rounding of an S, P or O element now and then. A flipped S of a
    // row's dominant key moves that row by as much as the emulation's own error, so that error is the bound, and
    // the rarity of flips is checked separately: most elements must agree bit for bit.
    double out_tol = 1e-12, lse_tol = 1e-12;
    if (is_low) {
      out_tol = lse_tol = 1e-6;
      for (size_t i = 0; i < on; ++i)
        if (out_used[i]) out_tol = std::max(out_tol, 1e-6 + std::fabs(low[i] - ref[i]));
      for (size_t i = 0; i < ln; ++i)
        if (lse_used[i] && std::isfinite(ref_lse[i]))
          lse_tol = std::max(lse_tol, 1e-6 + std::fabs(low_lse[i] - ref_lse[i]));
    }
    double worst = -1.0;  // the first used element sets worst_at
    int64_t worst_at = -1, differ = 0, used = 0;
    for (size_t i = 0; i < on; ++i) {
      if (!out_used[i]) {
        ASSERT_EQ(std::memcmp(&out[i], &sentinel, sizeof(double)), 0) << "unused out element " << i << " written";
        continue;
      }
      ++used;
      const double err = std::fabs(out[i] - want[i]);
      if (!(err <= worst)) {  // also catches NaN
        worst = err;
        worst_at = static_cast<int64_t>(i);
      }
      differ += err != 0.0;
    }
    EXPECT_LE(worst, out_tol) << "worst at " << flash3_test::out_locator(p)(worst_at) << ": " << out[worst_at] << " vs "
                              << want[worst_at];
    if (is_low) EXPECT_LT(differ, used / 10) << differ << " of " << used << " elements differ from the CPU emulation";
    for (size_t i = 0; i < ln; ++i) {
      if (!lse_used[i]) {
        ASSERT_EQ(std::memcmp(&lse[i], &sentinel, sizeof(double)), 0) << "unused lse element " << i << " written";
        continue;
      }
      if (std::isinf(want_lse[i])) {
        EXPECT_EQ(lse[i], want_lse[i]) << flash3_test::lse_locator(p)(static_cast<int64_t>(i));
      } else {
        EXPECT_NEAR(lse[i], want_lse[i], is_low ? lse_tol : lse_tol * std::max(1.0, std::fabs(want_lse[i])))
            << flash3_test::lse_locator(p)(static_cast<int64_t>(i));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, NaiveGpuReference, ::testing::ValuesIn(naive_cases()),
                         [](const ::testing::TestParamInfo<NaiveCase>& param_info) {
                           return std::string(param_info.param.name);
                         });

// ---- errors ---------------------------------------------------------------------------------------------------------

// Arguments for a tiny valid batch-mode problem; pointers are either real device buffers or fake aligned addresses
// (for checks that must not touch memory).
flash3::ForwardArgs tiny_args(flash3::DType dtype, int d, int dv, void* q, void* k, void* v, void* out, void* lse) {
  flash3::ForwardArgs a;
  a.q = flash3::make_tensor(q, dtype, {1, 16, 1, d});
  a.k = flash3::make_tensor(k, dtype, {1, 16, 1, d});
  a.v = flash3::make_tensor(v, dtype, {1, 16, 1, dv});
  a.out = flash3::make_tensor(out, dtype, {1, 16, 1, dv});
  a.lse = flash3::make_tensor(lse, flash3::DType::kFloat32, {1, 1, 16});
  return a;
}

// Finds a forward kernel of the manifest (tools/kernel_manifest.py) that this build does not contain.
bool find_uncompiled_key(flash3::KernelKey* missing) {
  const int hdims[][2] = {{64, 64}, {96, 96}, {128, 128}, {192, 128}, {192, 192}, {256, 256}};
  for (flash3::DType dt : {flash3::DType::kFloat16, flash3::DType::kBFloat16})
    for (const auto& hd : hdims)
      for (bool local : {false, true})
        for (bool softcap : {false, true}) {
          const flash3::KernelKey key{90, flash3::Direction::kForward, dt, hd[0], hd[1], local, softcap};
          if (flash3::find_kernel(key) == nullptr) {
            *missing = key;
            return true;
          }
        }
  return false;
}

TEST(FlashForwardErrors, UncompiledKernelIsNotSupported) {
  flash3::KernelKey key{};
  if (!find_uncompiled_key(&key)) GTEST_SKIP() << "every forward kernel of the manifest is compiled into this build";
  SCOPED_TRACE("missing kernel " + key.to_string());
  const int d = key.head_dim, dv = key.head_dim_v;
  DeviceBuffer q, k, v, out, lse;
  void* ptrs[5];
  const bool real = flash3_test::no_sm90_reason().empty();
  if (real) {
    q = DeviceBuffer(16 * d * 2);
    k = DeviceBuffer(16 * d * 2);
    v = DeviceBuffer(16 * dv * 2);
    out = DeviceBuffer(16 * dv * 2);
    lse = DeviceBuffer(16 * 4);
    void* p[5] = {q.get(), k.get(), v.get(), out.get(), lse.get()};
    std::copy(p, p + 5, ptrs);
  } else {
    // No sm_90 device: validation and planning for arch 90 read pointer values only, never the memory.
    for (int i = 0; i < 5; ++i) ptrs[i] = reinterpret_cast<void*>(static_cast<uintptr_t>(0x100000) * (i + 1));
  }
  flash3::ForwardArgs args = tiny_args(key.dtype, d, dv, ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4]);
  args.options.causal = key.local_mask;
  args.options.softcap = key.softcap ? 30.0f : 0.0f;
  try {
    if (real) {
      const int64_t ws = flash3::forward_workspace_size(args);
      DeviceBuffer workspace(static_cast<size_t>(ws));
      args.workspace = workspace.get();
      args.workspace_bytes = ws;
      flash3::forward(args);
    } else {
      // The arguments are valid for sm_90; the kernel lookup happens when the plan runs (src/dispatch), which
      // throws before any launch when the kernel is missing.
      flash3::validate_forward(args, 90);
      const flash3::FwdPlan plan = flash3::plan_forward(args, flash3::forward_problem_shape(args), 90, 132);
      flash3::run_forward(plan, nullptr);
    }
    ADD_FAILURE() << "no flash3::Error for a kernel that is not compiled";
  } catch (const flash3::Error& e) {
    EXPECT_EQ(e.status(), flash3::Status::kNotSupported) << status_name(e.status()) << ": " << e.what();
    EXPECT_FALSE(std::string(e.what()).empty());
  }
}

TEST(FlashForwardErrors, NoDeviceThrowsNoDevice) {
  if (flash3_test::has_gpu()) GTEST_SKIP() << "a CUDA device is present; this test runs only without one";
  void* fake[5];
  for (int i = 0; i < 5; ++i) fake[i] = reinterpret_cast<void*>(static_cast<uintptr_t>(0x100000) * (i + 1));
  const flash3::ForwardArgs args =
      tiny_args(flash3::DType::kBFloat16, 128, 128, fake[0], fake[1], fake[2], fake[3], fake[4]);
  try {
    flash3::forward(args);
    ADD_FAILURE() << "flash3::forward returned without a CUDA device";
  } catch (const flash3::Error& e) {
    EXPECT_EQ(e.status(), flash3::Status::kNoDevice) << status_name(e.status()) << ": " << e.what();
  }
}

}  // namespace
