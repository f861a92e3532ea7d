// Argument validation (src/api/validate.cpp): one test per rule, forward and backward. Validation never touches
// tensor memory, so the tests use fake, aligned "device" pointers and pass arch = 90 explicitly; they need no GPU.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>

#include "api/validate.hpp"
#include "flash3/flash3.hpp"

namespace {

using flash3::BackwardArgs;
using flash3::DType;
using flash3::Error;
using flash3::ForwardArgs;
using flash3::make_tensor;
using flash3::Status;
using flash3::TensorRef;

constexpr int kSm90 = 90;

void* fake(std::uintptr_t address) { return reinterpret_cast<void*>(address); }
const int32_t* fake_i32(std::uintptr_t address) { return reinterpret_cast<const int32_t*>(address); }

const char* status_str(Status s) {
  switch (s) {
    case Status::kSuccess: return "kSuccess";
    case Status::kInvalidArgument: return "kInvalidArgument";
    case Status::kNotSupported: return "kNotSupported";
    case Status::kNoDevice: return "kNoDevice";
    case Status::kCudaError: return "kCudaError";
    case Status::kInternalError: return "kInternalError";
  }
  return "?";
}

// Success when fn throws flash3::Error with `status` and a message that starts with `prefix` and contains every
// one of `parts`.
template <class Fn>
::testing::AssertionResult throws_error(Fn&& fn, Status status, const std::string& prefix,
                                        std::initializer_list<const char*> parts) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (e.status() != status)
      return ::testing::AssertionFailure() << "status " << status_str(e.status()) << ", expected "
                                           << status_str(status) << "; message: " << msg;
    if (msg.rfind(prefix, 0) != 0)
      return ::testing::AssertionFailure() << "message does not start with '" << prefix << "': " << msg;
    for (const char* part : parts)
      if (msg.find(part) == std::string::npos)
        return ::testing::AssertionFailure() << "message lacks '" << part << "': " << msg;
    return ::testing::AssertionSuccess() << msg;
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-flash3 exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

::testing::AssertionResult fwd_fails(const ForwardArgs& a, Status status, std::initializer_list<const char*> parts,
                                     int arch = kSm90) {
  return throws_error([&] { flash3::validate_forward(a, arch); }, status, "flash3::forward: ", parts);
}

::testing::AssertionResult bwd_fails(const BackwardArgs& a, Status status, std::initializer_list<const char*> parts,
                                     int arch = kSm90) {
  return throws_error([&] { flash3::validate_backward(a, arch); }, status, "flash3::backward: ", parts);
}

template <class Fn>
::testing::AssertionResult passes(Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw: " << e.what();
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult fwd_ok(const ForwardArgs& a) {
  return passes([&] { flash3::validate_forward(a, kSm90); });
}
::testing::AssertionResult bwd_ok(const BackwardArgs& a) {
  return passes([&] { flash3::validate_backward(a, kSm90); });
}

// Sizes of the default valid problem: GQA 8 / 2 heads, seqlen_q != seqlen_k.
constexpr int64_t B = 2, SQ = 16, SK = 24, H = 8, HK = 2, D = 64;
// Packed (varlen) totals.
constexpr int64_t TQ = 40, TK = 50;

ForwardArgs valid_forward(DType dt = DType::kBFloat16, int64_t d = D, int64_t dv = D) {
  ForwardArgs a;
  a.q = make_tensor(fake(0x100000), dt, {B, SQ, H, d});
  a.k = make_tensor(fake(0x200000), dt, {B, SK, HK, d});
  a.v = make_tensor(fake(0x300000), dt, {B, SK, HK, dv});
  a.out = make_tensor(fake(0x400000), dt, {B, SQ, H, dv});
  a.lse = make_tensor(fake(0x500000), DType::kFloat32, {B, H, SQ});
  return a;
}

flash3::VarlenArgs valid_varlen() {
  flash3::VarlenArgs v;
  v.cu_seqlens_q = fake_i32(0x600000);
  v.cu_seqlens_k = fake_i32(0x600100);
  v.batch = 3;
  v.max_seqlen_q = 20;
  v.max_seqlen_k = 30;
  return v;
}

ForwardArgs valid_varlen_forward(DType dt = DType::kBFloat16) {
  ForwardArgs a;
  a.q = make_tensor(fake(0x100000), dt, {TQ, H, D});
  a.k = make_tensor(fake(0x200000), dt, {TK, HK, D});
  a.v = make_tensor(fake(0x300000), dt, {TK, HK, D});
  a.out = make_tensor(fake(0x400000), dt, {TQ, H, D});
  a.lse = make_tensor(fake(0x500000), DType::kFloat32, {H, TQ});
  a.varlen = valid_varlen();
  return a;
}

BackwardArgs valid_backward(DType dt = DType::kBFloat16) {
  const ForwardArgs f = valid_forward(dt);
  BackwardArgs a;
  a.q = f.q;
  a.k = f.k;
  a.v = f.v;
  a.out = f.out;
  a.lse = f.lse;
  a.dout = make_tensor(fake(0x700000), dt, {B, SQ, H, D});
  a.dq = make_tensor(fake(0x800000), dt, {B, SQ, H, D});
  a.dk = make_tensor(fake(0x900000), dt, {B, SK, HK, D});
  a.dv = make_tensor(fake(0xa00000), dt, {B, SK, HK, D});
  return a;
}

BackwardArgs valid_varlen_backward() {
  const ForwardArgs f = valid_varlen_forward();
  BackwardArgs a;
  a.q = f.q;
  a.k = f.k;
  a.v = f.v;
  a.out = f.out;
  a.lse = f.lse;
  a.varlen = f.varlen;
  a.dout = make_tensor(fake(0x700000), f.q.dtype, {TQ, H, D});
  a.dq = make_tensor(fake(0x800000), f.q.dtype, {TQ, H, D});
  a.dk = make_tensor(fake(0x900000), f.q.dtype, {TK, HK, D});
  a.dv = make_tensor(fake(0xa00000), f.q.dtype, {TK, HK, D});
  return a;
}

bool has_cuda_device() {
  int count = 0;
  const bool ok = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  (void)cudaGetLastError();
  return ok;
}

// ---- valid inputs ------------------------------------------------------------------------------------------------

TEST(Validation, ValidArgumentsPass) {
  EXPECT_TRUE(fwd_ok(valid_forward()));
  EXPECT_TRUE(fwd_ok(valid_forward(DType::kFloat16)));
  EXPECT_TRUE(fwd_ok(valid_varlen_forward()));
  EXPECT_TRUE(bwd_ok(valid_backward()));
  EXPECT_TRUE(bwd_ok(valid_backward(DType::kFloat16)));
  EXPECT_TRUE(bwd_ok(valid_varlen_backward()));
  // lse is optional for forward.
  ForwardArgs no_lse = valid_forward();
  no_lse.lse = TensorRef{};
  EXPECT_TRUE(fwd_ok(no_lse));
  // Every head dim that is a multiple of 8 up to 256, and the (192, 128) pair.
  for (int64_t d = 8; d <= 256; d += 8) EXPECT_TRUE(fwd_ok(valid_forward(DType::kBFloat16, d, d))) << d;
  EXPECT_TRUE(fwd_ok(valid_forward(DType::kBFloat16, 192, 128)));
  // Batch-mode seqused (FA3's seqused_k with a KV cache).
  ForwardArgs seqused = valid_forward();
  seqused.varlen.seqused_k = fake_i32(0x600200);
  seqused.varlen.seqused_q = fake_i32(0x600300);
  EXPECT_TRUE(fwd_ok(seqused));
  // Options at their edges.
  ForwardArgs opt = valid_forward();
  opt.options.causal = true;
  opt.options.window_left = 5;
  opt.options.window_right = 0;
  opt.options.softcap = 30.0f;
  opt.options.softmax_scale = -1.0f;  // <= 0: the default
  EXPECT_TRUE(fwd_ok(opt));
  opt.options.window_right = -1;
  EXPECT_TRUE(fwd_ok(opt));
  // A workspace with its size.
  ForwardArgs ws = valid_forward();
  ws.workspace = fake(0xb00000);
  ws.workspace_bytes = 4096;
  EXPECT_TRUE(fwd_ok(ws));
  // Strided (non-contiguous) views are fine when their strides are 16-byte multiples: q sliced out of a packed qkv.
  ForwardArgs packed = valid_forward();
  packed.q = make_tensor(fake(0x100000), DType::kBFloat16, {B, SQ, H, D}, {SQ * 3 * H * D, 3 * H * D, D, 1});
  EXPECT_TRUE(fwd_ok(packed));
  // lse strides need no 16-byte alignment (it is written with plain fp32 stores).
  ForwardArgs odd_lse = valid_forward();
  odd_lse.lse = make_tensor(fake(0x500000), DType::kFloat32, {B, H, SQ}, {H * (SQ + 1), SQ + 1, 1});
  EXPECT_TRUE(fwd_ok(odd_lse));
}

TEST(Validation, EmptyProblemsAreValid) {
  // batch or seqlens of 0: nothing to compute (forward returns early); empty tensors may have null pointers.
  ForwardArgs a = valid_forward();
  a.q = make_tensor(nullptr, DType::kBFloat16, {0, SQ, H, D});
  a.k = make_tensor(nullptr, DType::kBFloat16, {0, SK, HK, D});
  a.v = make_tensor(nullptr, DType::kBFloat16, {0, SK, HK, D});
  a.out = make_tensor(nullptr, DType::kBFloat16, {0, SQ, H, D});
  a.lse = make_tensor(nullptr, DType::kFloat32, {0, H, SQ});
  EXPECT_TRUE(fwd_ok(a));
  EXPECT_TRUE(flash3::forward_problem_shape(a).no_queries());

  ForwardArgs no_keys = valid_forward();
  no_keys.k = make_tensor(nullptr, DType::kBFloat16, {B, 0, HK, D});
  no_keys.v = make_tensor(nullptr, DType::kBFloat16, {B, 0, HK, D});
  EXPECT_TRUE(fwd_ok(no_keys));
  EXPECT_FALSE(flash3::forward_problem_shape(no_keys).no_queries());

  ForwardArgs vl = valid_varlen_forward();
  vl.q = make_tensor(nullptr, DType::kBFloat16, {0, H, D});
  vl.out = make_tensor(nullptr, DType::kBFloat16, {0, H, D});
  vl.lse = make_tensor(nullptr, DType::kFloat32, {H, 0});
  vl.varlen.max_seqlen_q = 0;
  EXPECT_TRUE(fwd_ok(vl));

  BackwardArgs b = valid_backward();
  b.q = b.dq = make_tensor(nullptr, DType::kBFloat16, {B, 0, H, D});
  b.out = b.dout = make_tensor(nullptr, DType::kBFloat16, {B, 0, H, D});
  b.lse = make_tensor(nullptr, DType::kFloat32, {B, H, 0});
  EXPECT_TRUE(bwd_ok(b));
}

// ---- pointers ----------------------------------------------------------------------------------------------------

TEST(Validation, NullPointer) {
  ForwardArgs a = valid_forward();
  a.q.data = nullptr;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"q.data is null"}));
  a = valid_forward();
  a.out.data = nullptr;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"out.data is null"}));
  a = valid_forward();
  a.lse.data = nullptr;  // rank 3 but no data: given, and wrong
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"lse.data is null"}));

  BackwardArgs b = valid_backward();
  b.dq.data = nullptr;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"dq.data is null"}));
  b = valid_backward();
  b.dout.data = nullptr;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"dout.data is null"}));
}

TEST(Validation, MisalignedPointer) {
  ForwardArgs a = valid_forward();
  a.q.data = fake(0x100008);
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"q.data", "16-byte aligned"}));
  a = valid_forward();
  a.v.data = fake(0x300002);
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"v.data", "16-byte aligned"}));
  a = valid_forward();
  a.lse.data = fake(0x500004);
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"lse.data", "16-byte aligned"}));

  BackwardArgs b = valid_backward();
  b.dk.data = fake(0x900001);
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"dk.data", "16-byte aligned"}));
}

TEST(Validation, MissingTensor) {
  ForwardArgs a = valid_forward();
  a.out = TensorRef{};
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"out is required"}));
  a = valid_forward();
  a.k = TensorRef{};
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"k is required"}));

  BackwardArgs b = valid_backward();
  b.lse = TensorRef{};
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"lse is required for backward"}));
  b = valid_backward();
  b.dv = TensorRef{};
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"dv is required"}));
}

// ---- ranks, dtypes -----------------------------------------------------------------------------------------------

TEST(Validation, RankMismatch) {
  ForwardArgs a = valid_forward();
  a.q = make_tensor(fake(0x100000), DType::kBFloat16, {B * SQ, H, D});
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument,
                        {"q.rank = 3, expected 4 (batch, seqlen_q, num_heads, head_dim)", "cu_seqlens"}));
  a = valid_forward();
  a.lse = make_tensor(fake(0x500000), DType::kFloat32, {B, H, SQ, 1});
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"lse.rank = 4, expected 3 (batch, num_heads, seqlen_q)"}));
  a = valid_varlen_forward();
  a.k = make_tensor(fake(0x200000), DType::kBFloat16, {1, TK, HK, D});
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"k.rank = 4, expected 3 (total_k, num_heads_k, head_dim)"}));
  a = valid_forward();
  a.v.rank = 9;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"v.rank = 9"}));

  BackwardArgs b = valid_backward();
  b.dq.rank = 3;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"dq.rank = 3, expected 4"}));
}

TEST(Validation, DtypeMismatch) {
  ForwardArgs a = valid_forward();
  a.k.dtype = DType::kFloat16;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"k.dtype = float16, expected bfloat16 (the dtype of q)"}));
  a = valid_forward();
  a.v.dtype = DType::kFloat16;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"v.dtype = float16"}));
  a = valid_forward();
  a.out.dtype = DType::kFloat32;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"out.dtype = float32, expected bfloat16"}));
  a = valid_forward();
  a.lse.dtype = DType::kBFloat16;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"lse.dtype = bfloat16, expected float32"}));

  BackwardArgs b = valid_backward();
  b.dout.dtype = DType::kFloat16;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"dout.dtype = float16, expected bfloat16"}));
  b = valid_backward();
  b.dk.dtype = DType::kFloat32;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"dk.dtype = float32"}));
  b = valid_backward();
  b.lse.dtype = DType::kFloat16;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"lse.dtype = float16, expected float32"}));
}

TEST(Validation, UnsupportedDtype) {
  ForwardArgs a = valid_forward(DType::kFloat32);
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"q.dtype = float32, expected float16 or bfloat16"}));
  a = valid_forward(DType::kInt32);
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"q.dtype = int32"}));
  // FP8 forward: q, k, v e4m3 with a 16-bit out (tests/cpp/kernel/test_fp8_gpu.cu checks the rest).
  a = valid_forward(DType::kFloat8E4M3);
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"out.dtype = float8_e4m3", "expected bfloat16 or float16"}));
  a = valid_forward();
  a.v.dtype = static_cast<DType>(42);  // e.g. a bad value through a cast
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"v.dtype = 42 is not a flash3::DType"}));

  BackwardArgs b = valid_backward(DType::kFloat8E4M3);
  EXPECT_TRUE(bwd_fails(b, Status::kNotSupported, {"q.dtype = float8_e4m3", "FP8 backward"}));
  b = valid_backward(DType::kFloat32);
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"q.dtype = float32"}));
}

// ---- head dims, heads --------------------------------------------------------------------------------------------

TEST(Validation, UnsupportedHeadDim) {
  for (int64_t d : {100, 4, 12, 264, 512}) {
    EXPECT_TRUE(fwd_fails(valid_forward(DType::kBFloat16, d, d), Status::kNotSupported,
                          {"q.shape[3] (head_dim) = ", "head_dim must be a multiple of 8 and at most 256"}))
        << d;
  }
  EXPECT_TRUE(fwd_fails(valid_forward(DType::kBFloat16, 64, 68), Status::kNotSupported,
                        {"v.shape[3] (head_dim_v) = 68", "head_dim_v must be a multiple of 8 and at most 256"}));
  // Pairs other than dv == d and (192, 128).
  EXPECT_TRUE(fwd_fails(valid_forward(DType::kBFloat16, 64, 128), Status::kNotSupported,
                        {"head_dim = 64 (q.shape[3]) with head_dim_v = 128 (v.shape[3])", "(192, 128)"}));
  EXPECT_TRUE(fwd_fails(valid_forward(DType::kBFloat16, 128, 192), Status::kNotSupported,
                        {"head_dim = 128", "head_dim_v = 192"}));
  // 0 is not a size at all.
  EXPECT_TRUE(fwd_fails(valid_forward(DType::kBFloat16, 0, 0), Status::kInvalidArgument,
                        {"q.shape[3] (head_dim) = 0, expected > 0"}));

  BackwardArgs b = valid_backward();
  for (TensorRef* t : {&b.q, &b.k, &b.dq, &b.dk})
    *t = make_tensor(t->data, t->dtype, {t->shape[0], t->shape[1], t->shape[2], 76});
  EXPECT_TRUE(bwd_fails(b, Status::kNotSupported, {"q.shape[3] (head_dim) = 76", "multiple of 8 and at most 256"}));
}

TEST(Validation, HeadsNotDivisible) {
  ForwardArgs a = valid_forward();
  a.k = make_tensor(fake(0x200000), DType::kBFloat16, {B, SK, 3, D});
  a.v = make_tensor(fake(0x300000), DType::kBFloat16, {B, SK, 3, D});
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument,
                        {"flash3::forward: k.shape[2] (num_heads_k) = 3 must divide q.shape[2] (num_heads) = 8"}));
  a = valid_varlen_forward();
  a.k = make_tensor(fake(0x200000), DType::kBFloat16, {TK, 5, D});
  a.v = make_tensor(fake(0x300000), DType::kBFloat16, {TK, 5, D});
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"k.shape[1] (num_heads_k) = 5 must divide q.shape[1]"}));
  // More KV heads than query heads.
  a = valid_forward();
  a.k = make_tensor(fake(0x200000), DType::kBFloat16, {B, SK, 16, D});
  a.v = make_tensor(fake(0x300000), DType::kBFloat16, {B, SK, 16, D});
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"(num_heads_k) = 16 must divide"}));

  BackwardArgs b = valid_backward();
  for (TensorRef* t : {&b.k, &b.v, &b.dk, &b.dv}) *t = make_tensor(t->data, t->dtype, {B, SK, 3, D});
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument,
                        {"flash3::backward: k.shape[2] (num_heads_k) = 3 must divide q.shape[2] (num_heads) = 8"}));
}

TEST(Validation, ZeroHeads) {
  ForwardArgs a = valid_forward();
  for (TensorRef* t : {&a.q, &a.out}) t->shape[2] = 0;
  a.lse.shape[1] = 0;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"q.shape[2] (num_heads) = 0, expected > 0"}));
  a = valid_forward();
  for (TensorRef* t : {&a.k, &a.v}) t->shape[2] = 0;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"k.shape[2] (num_heads_k) = 0, expected > 0"}));
}

// ---- shapes and strides ------------------------------------------------------------------------------------------

TEST(Validation, ShapeMismatch) {
  ForwardArgs a = valid_forward();
  a.k.shape[0] = B + 1;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"k.shape[0] (batch) = 3, expected 2 (q.shape[0])"}));
  a = valid_forward();
  a.k.shape[3] = 128;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"k.shape[3] (head_dim) = 128, expected 64 (q.shape[3])"}));
  a = valid_forward();
  a.v.shape[1] = SK - 1;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"v.shape[1] (seqlen_k) = 23, expected 24 (k.shape[1])"}));
  a = valid_forward();
  a.v.shape[2] = HK * 2;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"v.shape[2] (num_heads_k) = 4, expected 2 (k.shape[2])"}));
  a = valid_forward();
  a.out.shape[1] = SQ + 1;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"out.shape[1] (seqlen_q) = 17, expected 16 (q.shape[1])"}));
  a = valid_forward();
  a.out.shape[3] = 128;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"out.shape[3] (head_dim_v) = 128, expected 64 (v.shape[3])"}));
  a = valid_forward();
  a.lse.shape[2] = SK;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"lse.shape[2] (seqlen_q) = 24, expected 16 (q.shape[1])"}));
  a = valid_forward();
  a.lse = make_tensor(fake(0x500000), DType::kFloat32, {B, SQ, H});  // FA3's lse is (b, h, sq), not (b, sq, h)
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"lse.shape[1] (num_heads) = 16, expected 8"}));
  a = valid_varlen_forward();
  a.v.shape[0] = TK + 1;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"v.shape[0] (total_k) = 51, expected 50 (k.shape[0])"}));
  a = valid_varlen_forward();
  a.lse.shape[1] = TQ - 1;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"lse.shape[1] (total_q) = 39, expected 40 (q.shape[0])"}));

  BackwardArgs b = valid_backward();
  b.dout.shape[1] = SQ - 1;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"dout.shape[1] (seqlen_q) = 15, expected 16 (q.shape[1])"}));
  b = valid_backward();
  b.dq.shape[2] = H / 2;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"dq.shape[2] (num_heads) = 4, expected 8 (q.shape[2])"}));
  b = valid_backward();
  b.dk.shape[1] = SK + 8;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"dk.shape[1] (seqlen_k) = 32, expected 24 (k.shape[1])"}));
  b = valid_backward();
  b.dv.shape[0] = 1;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"dv.shape[0] (batch) = 1, expected 2 (q.shape[0])"}));
  BackwardArgs bv = valid_varlen_backward();
  bv.dk.shape[0] = TK - 2;
  EXPECT_TRUE(bwd_fails(bv, Status::kInvalidArgument, {"dk.shape[0] (total_k) = 48, expected 50 (k.shape[0])"}));
}

TEST(Validation, NonUnitLastStride) {
  ForwardArgs a = valid_forward();
  a.q.stride[3] = 2;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument,
                        {"q.stride[3] (head_dim) = 2, expected 1: the last dim must be contiguous"}));
  a = valid_forward();
  a.out.stride[3] = 0;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"out.stride[3] (head_dim_v) = 0, expected 1"}));
  a = valid_forward();
  a.lse.stride[2] = 8;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"lse.stride[2] (seqlen_q) = 8, expected 1"}));
  a = valid_varlen_forward();
  a.k.stride[2] = HK;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"k.stride[2] (head_dim) = 2, expected 1"}));

  BackwardArgs b = valid_backward();
  b.dout.stride[3] = 64;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"dout.stride[3] (head_dim_v) = 64, expected 1"}));
  b = valid_backward();
  b.dv.stride[3] = 2;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"dv.stride[3]"}));
}

TEST(Validation, NegativeStride) {
  ForwardArgs a = valid_forward();
  a.k.stride[1] = -a.k.stride[1];
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"k.stride[1] (seqlen_k) = -128 is negative"}));
  BackwardArgs b = valid_backward();
  b.dq.stride[0] = -8;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"dq.stride[0] (batch) = -8 is negative"}));
}

TEST(Validation, StrideNotSixteenByteMultiple) {
  ForwardArgs a = valid_forward();
  // Rows padded by 4 elements (8 bytes): TMA cannot address them.
  a.q = make_tensor(fake(0x100000), DType::kBFloat16, {B, SQ, H, D}, {SQ * (H * D + 4), H * D + 4, D, 1});
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument,
                        {"q.stride[1] (seqlen_q) = 516 is not a multiple of 8 elements", "TMA", "16 bytes"}));
  a = valid_forward();
  a.v.stride[2] = D + 2;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"v.stride[2] (num_heads_k) = 66 is not a multiple of 8"}));
  BackwardArgs b = valid_backward();
  b.dk.stride[0] = b.dk.stride[0] + 1;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"dk.stride[0] (batch)", "not a multiple of 8 elements"}));
}

TEST(Validation, NegativeSizes) {
  ForwardArgs a = valid_forward();
  a.q.shape[1] = -1;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"q.shape[1] (seqlen_q) = -1 is negative"}));
  a = valid_forward();
  a.k.shape[0] = -2;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"k.shape[0] (batch) = -2 is negative"}));
  a = valid_varlen_forward();
  a.varlen.batch = 0;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"varlen.batch = 0, expected >= 1"}));
  a = valid_varlen_forward();
  a.varlen.max_seqlen_q = -1;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"varlen.max_seqlen_q = -1 is negative"}));
  a = valid_varlen_forward();
  a.varlen.max_seqlen_k = -5;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"varlen.max_seqlen_k = -5 is negative"}));
  // In batch mode the varlen sizes are ignored.
  a = valid_forward();
  a.varlen.batch = -3;
  EXPECT_TRUE(fwd_ok(a));

  BackwardArgs b = valid_backward();
  b.dv.shape[1] = -24;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"dv.shape[1] (seqlen_k) = -24 is negative"}));
  BackwardArgs bv = valid_varlen_backward();
  bv.varlen.batch = -1;
  EXPECT_TRUE(bwd_fails(bv, Status::kInvalidArgument, {"varlen.batch = -1"}));
}

TEST(Validation, VarlenNeedsBothCuSeqlens) {
  ForwardArgs a = valid_varlen_forward();
  a.varlen.cu_seqlens_k = nullptr;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"varlen.cu_seqlens_q is set but varlen.cu_seqlens_k is null"}));
  a = valid_varlen_forward();
  a.varlen.cu_seqlens_q = nullptr;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"varlen.cu_seqlens_k is set but varlen.cu_seqlens_q is null"}));
  BackwardArgs b = valid_varlen_backward();
  b.varlen.cu_seqlens_q = nullptr;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"varlen.cu_seqlens_k is set"}));
}

TEST(Validation, MisalignedVarlenArrays) {
  ForwardArgs a = valid_varlen_forward();
  a.varlen.cu_seqlens_q = fake_i32(0x600002);
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"varlen.cu_seqlens_q", "not 4-byte aligned"}));
  a = valid_forward();
  a.varlen.seqused_k = fake_i32(0x600201);
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"varlen.seqused_k", "not 4-byte aligned"}));
  BackwardArgs b = valid_varlen_backward();
  b.varlen.cu_seqlens_k = fake_i32(0x600103);
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"varlen.cu_seqlens_k", "not 4-byte aligned"}));
}

TEST(Validation, SizesOverflow) {
  // seqlen beyond int32.
  constexpr int64_t kBig = int64_t{1} << 31;
  ForwardArgs a = valid_forward();
  for (TensorRef* t : {&a.q, &a.out}) *t = make_tensor(t->data, t->dtype, {1, kBig, H, D});
  for (TensorRef* t : {&a.k, &a.v}) *t = make_tensor(t->data, t->dtype, {1, SK, HK, D});
  a.lse = make_tensor(a.lse.data, DType::kFloat32, {1, H, kBig});
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument,
                        {"q.shape[1] (seqlen_q) = 2147483648 exceeds the int32 limit 2147483647"}));
  // Varlen totals too (cu_seqlens are int32).
  a = valid_varlen_forward();
  for (TensorRef* t : {&a.k, &a.v}) *t = make_tensor(t->data, t->dtype, {kBig + 8, HK, D});
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"k.shape[0] (total_k) = 2147483656 exceeds the int32 limit"}));
  // Element count beyond int64: sizes each fit int32, their product does not.
  constexpr int64_t kHuge = int64_t{1} << 30;
  a = valid_forward();
  for (TensorRef* t : {&a.q, &a.out}) *t = make_tensor(t->data, t->dtype, {kHuge, kHuge, H, D});
  for (TensorRef* t : {&a.k, &a.v}) *t = make_tensor(t->data, t->dtype, {kHuge, SK, HK, D});
  a.lse = TensorRef{};
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"q: shape and strides address more than 2^63 bytes"}));
  // A stride so large the addressed range overflows.
  a = valid_forward();
  a.v.stride[0] = int64_t{1} << 62;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"v: shape and strides", "overflows int64"}));
  BackwardArgs b = valid_backward();
  b.dq.stride[0] = int64_t{1} << 62;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"dq: shape and strides"}));
}

// ---- options -----------------------------------------------------------------------------------------------------

TEST(Validation, WindowCausalConflict) {
  ForwardArgs a = valid_forward();
  a.options.causal = true;
  a.options.window_right = 4;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument,
                        {"options.window_right = 4", "causal=true requires window_right in {-1, 0}"}));
  BackwardArgs b = valid_backward();
  b.options.causal = true;
  b.options.window_right = 1;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"causal=true requires window_right in {-1, 0}"}));
  // Without causal, any window_right >= -1 is fine.
  a.options.causal = false;
  EXPECT_TRUE(fwd_ok(a));
}

TEST(Validation, WindowOutOfRange) {
  ForwardArgs a = valid_forward();
  a.options.window_left = -2;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"options.window_left = -2, expected >= -1"}));
  a = valid_forward();
  a.options.window_right = -7;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"options.window_right = -7, expected >= -1"}));
  BackwardArgs b = valid_backward();
  b.options.window_left = std::numeric_limits<int32_t>::min();
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"options.window_left = -2147483648"}));
}

TEST(Validation, SoftmaxScaleAndSoftcap) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (float scale : {nan, inf, -inf}) {
    ForwardArgs a = valid_forward();
    a.options.softmax_scale = scale;
    EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"options.softmax_scale = ", "must be finite"})) << scale;
  }
  for (float softcap : {-1.0f, nan, inf}) {
    ForwardArgs a = valid_forward();
    a.options.softcap = softcap;
    EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"options.softcap = ", "expected a finite value >= 0"}))
        << softcap;
  }
  BackwardArgs b = valid_backward();
  b.options.softmax_scale = nan;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"options.softmax_scale"}));
  b = valid_backward();
  b.options.softcap = -0.5f;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"options.softcap"}));
}

TEST(Validation, Workspace) {
  ForwardArgs a = valid_forward();
  a.workspace_bytes = 1024;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"workspace is null but workspace_bytes = 1024"}));
  a = valid_forward();
  a.workspace = fake(0xb00000);
  a.workspace_bytes = -1;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"workspace_bytes = -1 is negative"}));
  a = valid_forward();
  a.workspace = fake(0xb00004);
  a.workspace_bytes = 64;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"workspace = ", "not 16-byte aligned"}));
  BackwardArgs b = valid_backward();
  b.workspace_bytes = 8;
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"workspace is null"}));
}

// ---- architecture and device -------------------------------------------------------------------------------------

TEST(Validation, UnsupportedArch) {
  EXPECT_TRUE(fwd_fails(valid_forward(), Status::kNotSupported,
                        {"flash3 has kernels for sm_90 (Hopper) only so far; this GPU is sm_80"}, 80));
  EXPECT_TRUE(fwd_fails(valid_forward(), Status::kNotSupported, {"this GPU is sm_86"}, 86));
  EXPECT_TRUE(fwd_fails(valid_forward(), Status::kNotSupported, {"this GPU is sm_100"}, 100));
  EXPECT_TRUE(bwd_fails(valid_backward(), Status::kNotSupported, {"this GPU is sm_89"}, 89));
  EXPECT_TRUE(fwd_fails(valid_forward(), Status::kInvalidArgument, {"arch = -1"}, -1));
  EXPECT_TRUE(flash3::arch_supported(90));
  EXPECT_FALSE(flash3::arch_supported(80));
}

TEST(Validation, HostChecksComeBeforeArchAndDevice) {
  // A bad argument is reported as such whatever the GPU, and without one.
  ForwardArgs a = valid_forward();
  a.q.stride[3] = 2;
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"q.stride[3]"}, 80));
  EXPECT_TRUE(fwd_fails(a, Status::kInvalidArgument, {"q.stride[3]"}, 0));
  BackwardArgs b = valid_backward();
  b.lse = TensorRef{};
  EXPECT_TRUE(bwd_fails(b, Status::kInvalidArgument, {"lse is required"}, 0));
}

TEST(Validation, NoCudaDevice) {
  if (has_cuda_device()) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_TRUE(fwd_fails(valid_forward(), Status::kNoDevice, {"no CUDA device"}, 0));
  EXPECT_TRUE(bwd_fails(valid_backward(), Status::kNoDevice, {"no CUDA device"}, 0));
  // The entry points themselves (valid arguments: only the device is missing).
  EXPECT_TRUE(throws_error([] { flash3::forward(valid_forward()); }, Status::kNoDevice, "flash3::forward: ",
                           {"no CUDA device"}));
  EXPECT_TRUE(throws_error([] { flash3::backward(valid_backward()); }, Status::kNoDevice, "flash3::backward: ",
                           {"no CUDA device"}));
  EXPECT_TRUE(throws_error([] { flash3::current_device_arch("probe"); }, Status::kNoDevice, "probe: ",
                           {"no CUDA device"}));
  // Repeated queries give the same answer (nothing cached from a failed first attempt).
  EXPECT_TRUE(fwd_fails(valid_forward(), Status::kNoDevice, {"no CUDA device"}, 0));
}

TEST(Validation, CurrentDeviceArch) {
  if (!has_cuda_device()) GTEST_SKIP() << "no CUDA device";
  const int arch = flash3::current_device_arch("probe");
  EXPECT_GE(arch, 30);
  if (!flash3::arch_supported(arch)) {
    EXPECT_TRUE(fwd_fails(valid_forward(), Status::kNotSupported, {"only so far; this GPU is sm_"}, 0));
  }
}

// ---- a failed call changes no output -----------------------------------------------------------------------------

TEST(Validation, FailedCallChangesNoOutput) {
  // out and lse point at host memory with a known pattern; the failing calls must leave it as it was. (Validation
  // reads pointer values only, so this is safe with or without a GPU: nothing is launched.)
  constexpr int64_t b = 1, s = 4, h = 2, d = 8;
  alignas(16) uint16_t out[b * s * h * d];
  alignas(16) float lse[b * h * s];
  alignas(16) uint16_t dq[b * s * h * d];
  std::memset(out, 0xAB, sizeof(out));
  std::memset(lse, 0xCD, sizeof(lse));
  std::memset(dq, 0xEF, sizeof(dq));
  uint16_t out0[b * s * h * d];
  float lse0[b * h * s];
  uint16_t dq0[b * s * h * d];
  std::memcpy(out0, out, sizeof(out));
  std::memcpy(lse0, lse, sizeof(lse));
  std::memcpy(dq0, dq, sizeof(dq));

  ForwardArgs a;
  a.q = make_tensor(fake(0x100000), DType::kBFloat16, {b, s, h, d});
  a.k = make_tensor(fake(0x200000), DType::kBFloat16, {b, s, 1, d});
  a.v = make_tensor(fake(0x300000), DType::kBFloat16, {b, s, 1, d});
  a.out = make_tensor(out, DType::kBFloat16, {b, s, h, d});
  a.lse = make_tensor(lse, DType::kFloat32, {b, h, s});
  ASSERT_TRUE(fwd_ok(a));

  ForwardArgs bad_heads = a;
  bad_heads.k.shape[2] = bad_heads.v.shape[2] = 3;
  ForwardArgs bad_window = a;
  bad_window.options.causal = true;
  bad_window.options.window_right = 2;
  ForwardArgs bad_dtype = a;
  bad_dtype.v.dtype = DType::kFloat16;
  for (const ForwardArgs* bad : {&bad_heads, &bad_window, &bad_dtype}) {
    EXPECT_THROW(flash3::validate_forward(*bad, kSm90), Error);
    EXPECT_THROW(flash3::validate_forward(*bad, 0), Error);
    EXPECT_THROW(flash3::forward(*bad), Error);
    EXPECT_THROW(flash3::forward_workspace_size(*bad), Error);
  }
  EXPECT_EQ(std::memcmp(out, out0, sizeof(out)), 0);
  EXPECT_EQ(std::memcmp(lse, lse0, sizeof(lse)), 0);

  BackwardArgs g;
  g.q = a.q;
  g.k = a.k;
  g.v = a.v;
  g.out = make_tensor(fake(0x400000), DType::kBFloat16, {b, s, h, d});
  g.lse = make_tensor(lse, DType::kFloat32, {b, h, s});
  g.dout = make_tensor(fake(0x700000), DType::kBFloat16, {b, s, h, d});
  g.dq = make_tensor(dq, DType::kBFloat16, {b, s, h, d});
  g.dk = make_tensor(fake(0x900000), DType::kBFloat16, {b, s, 1, d});
  g.dv = make_tensor(fake(0xa00000), DType::kBFloat16, {b, s, 1, d});
  ASSERT_TRUE(bwd_ok(g));
  BackwardArgs bad_grad = g;
  bad_grad.dk.shape[1] = s + 1;
  EXPECT_THROW(flash3::backward(bad_grad), Error);
  EXPECT_THROW(flash3::backward_workspace_size(bad_grad), Error);
  EXPECT_EQ(std::memcmp(dq, dq0, sizeof(dq)), 0);
  EXPECT_EQ(std::memcmp(lse, lse0, sizeof(lse)), 0);
}

// ---- canonical sizes and the type helpers ------------------------------------------------------------------------

TEST(Validation, ProblemShape) {
  const flash3::ProblemShape p = flash3::forward_problem_shape(valid_forward(DType::kBFloat16, 192, 128));
  EXPECT_FALSE(p.varlen);
  EXPECT_EQ(p.batch, B);
  EXPECT_EQ(p.seqlen_q, SQ);
  EXPECT_EQ(p.seqlen_k, SK);
  EXPECT_EQ(p.heads, H);
  EXPECT_EQ(p.heads_k, HK);
  EXPECT_EQ(p.head_dim, 192);
  EXPECT_EQ(p.head_dim_v, 128);
  EXPECT_EQ(p.total_q, B * SQ);
  EXPECT_EQ(p.total_k, B * SK);

  const flash3::ProblemShape v = flash3::backward_problem_shape(valid_varlen_backward());
  EXPECT_TRUE(v.varlen);
  EXPECT_EQ(v.batch, 3);
  EXPECT_EQ(v.seqlen_q, 20);
  EXPECT_EQ(v.seqlen_k, 30);
  EXPECT_EQ(v.heads, H);
  EXPECT_EQ(v.heads_k, HK);
  EXPECT_EQ(v.head_dim, D);
  EXPECT_EQ(v.head_dim_v, D);
  EXPECT_EQ(v.total_q, TQ);
  EXPECT_EQ(v.total_k, TK);
}

TEST(ValidationHelpers, DtypeNameAndSize) {
  EXPECT_STREQ(flash3::dtype_name(DType::kFloat16), "float16");
  EXPECT_STREQ(flash3::dtype_name(DType::kBFloat16), "bfloat16");
  EXPECT_STREQ(flash3::dtype_name(DType::kFloat32), "float32");
  EXPECT_STREQ(flash3::dtype_name(DType::kFloat8E4M3), "float8_e4m3");
  EXPECT_STREQ(flash3::dtype_name(DType::kInt32), "int32");
  EXPECT_STREQ(flash3::dtype_name(static_cast<DType>(99)), "invalid");
  EXPECT_EQ(flash3::dtype_size(DType::kFloat16), 2);
  EXPECT_EQ(flash3::dtype_size(DType::kBFloat16), 2);
  EXPECT_EQ(flash3::dtype_size(DType::kFloat32), 4);
  EXPECT_EQ(flash3::dtype_size(DType::kFloat8E4M3), 1);
  EXPECT_EQ(flash3::dtype_size(DType::kInt32), 4);
  EXPECT_TRUE(throws_error([] { flash3::dtype_size(static_cast<DType>(-1)); }, Status::kInvalidArgument,
                           "flash3::dtype_size: ", {"-1"}));
}

TEST(ValidationHelpers, MakeTensor) {
  const TensorRef t = make_tensor(fake(0x1000), DType::kFloat16, {2, 3, 4, 8});
  EXPECT_EQ(t.data, fake(0x1000));
  EXPECT_EQ(t.dtype, DType::kFloat16);
  EXPECT_EQ(t.rank, 4);
  const int64_t shape[] = {2, 3, 4, 8}, stride[] = {96, 32, 8, 1};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(t.shape[i], shape[i]);
    EXPECT_EQ(t.stride[i], stride[i]);
  }
  // Size-0 dims count as 1 for the strides (as in PyTorch).
  const TensorRef e = make_tensor(nullptr, DType::kFloat16, {2, 0, 8});
  EXPECT_EQ(e.stride[0], 8);
  EXPECT_EQ(e.stride[1], 8);
  const TensorRef s = make_tensor(nullptr, DType::kFloat32, {2, 3}, {16, 1});
  EXPECT_EQ(s.stride[0], 16);
  EXPECT_TRUE(throws_error([] { make_tensor(nullptr, DType::kFloat32, {1, 2, 3, 4, 5, 6}); },
                           Status::kInvalidArgument, "flash3::make_tensor: ", {"rank 6"}));
  EXPECT_TRUE(throws_error([] { make_tensor(nullptr, DType::kFloat32, {2, 3}, {1}); }, Status::kInvalidArgument,
                           "flash3::make_tensor: ", {"1 strides given for rank 2"}));
  EXPECT_FALSE(TensorRef{}.defined());
}

TEST(ValidationHelpers, VersionString) {
  const std::string expected = std::to_string(FLASH3_VERSION_MAJOR) + "." + std::to_string(FLASH3_VERSION_MINOR) +
                               "." + std::to_string(FLASH3_VERSION_PATCH);
  EXPECT_EQ(flash3::version_string(), expected);
}

}  // namespace
