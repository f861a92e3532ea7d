// The C ABI (src/api/c_api.cpp): status codes, thread-local error messages, struct versioning, and that no C++
// exception crosses the extern "C" boundary. Like the validation tests, these use fake aligned device pointers and an
// explicit arch (flash3_validate_*), so they need no GPU.
#include "flash3/flash3_c.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <thread>

#include "flash3/flash3.hpp"

namespace {

flash3_tensor tensor(std::uintptr_t address, int32_t dtype, std::initializer_list<int64_t> shape) {
  flash3_tensor t;
  std::memset(&t, 0, sizeof(t));
  t.data = reinterpret_cast<void*>(address);
  t.dtype = dtype;
  t.rank = static_cast<int32_t>(shape.size());
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  int64_t stride = 1;
  for (int d = t.rank - 1; d >= 0; --d) {
    t.stride[d] = stride;
    stride *= t.shape[d];
  }
  return t;
}

flash3_attention_params valid_params() {
  flash3_attention_params p;
  flash3_attention_params_init(&p);
  p.q = tensor(0x100000, FLASH3_DTYPE_BFLOAT16, {2, 16, 8, 64});
  p.k = tensor(0x200000, FLASH3_DTYPE_BFLOAT16, {2, 24, 2, 64});
  p.v = tensor(0x300000, FLASH3_DTYPE_BFLOAT16, {2, 24, 2, 64});
  p.out = tensor(0x400000, FLASH3_DTYPE_BFLOAT16, {2, 16, 8, 64});
  p.lse = tensor(0x500000, FLASH3_DTYPE_FLOAT32, {2, 8, 16});
  p.dout = tensor(0x700000, FLASH3_DTYPE_BFLOAT16, {2, 16, 8, 64});
  p.dq = tensor(0x800000, FLASH3_DTYPE_BFLOAT16, {2, 16, 8, 64});
  p.dk = tensor(0x900000, FLASH3_DTYPE_BFLOAT16, {2, 24, 2, 64});
  p.dv = tensor(0xa00000, FLASH3_DTYPE_BFLOAT16, {2, 24, 2, 64});
  return p;
}

bool contains(const char* haystack, const char* needle) {
  return haystack != nullptr && std::strstr(haystack, needle) != nullptr;
}

bool has_cuda_device() {
  int count = 0;
  const bool ok = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  (void)cudaGetLastError();
  return ok;
}

TEST(CApi, Version) {
  EXPECT_STREQ(flash3_version(), flash3::version_string());
  const std::string expected = std::to_string(FLASH3_VERSION_MAJOR) + "." + std::to_string(FLASH3_VERSION_MINOR) +
                               "." + std::to_string(FLASH3_VERSION_PATCH);
  EXPECT_EQ(flash3_version(), expected);
  EXPECT_EQ(flash3_c_api_version(), FLASH3_C_API_VERSION);
  EXPECT_EQ(flash3_c_api_version(), 2);
}

TEST(CApi, ParamsInitDefaults) {
  flash3_attention_params p;
  std::memset(&p, 0xFF, sizeof(p));  // init must overwrite every field
  flash3_attention_params_init(&p);
  EXPECT_EQ(p.struct_size, sizeof(flash3_attention_params));
  for (const flash3_tensor* t : {&p.q, &p.k, &p.v, &p.out, &p.lse, &p.dout, &p.dq, &p.dk, &p.dv}) {
    EXPECT_EQ(t->data, nullptr);
    EXPECT_EQ(t->rank, 0);
    for (int i = 0; i < FLASH3_MAX_RANK; ++i) {
      EXPECT_EQ(t->shape[i], 0);
      EXPECT_EQ(t->stride[i], 0);
    }
  }
  EXPECT_EQ(p.cu_seqlens_q, nullptr);
  EXPECT_EQ(p.cu_seqlens_k, nullptr);
  EXPECT_EQ(p.seqused_q, nullptr);
  EXPECT_EQ(p.seqused_k, nullptr);
  EXPECT_EQ(p.varlen_batch, 0);
  EXPECT_EQ(p.max_seqlen_q, 0);
  EXPECT_EQ(p.max_seqlen_k, 0);
  EXPECT_EQ(p.softmax_scale, 0.0f);
  EXPECT_EQ(p.causal, 0);
  EXPECT_EQ(p.window_left, -1);
  EXPECT_EQ(p.window_right, -1);
  EXPECT_EQ(p.softcap, 0.0f);
  EXPECT_EQ(p.deterministic, 0);
  EXPECT_EQ(p.stream, nullptr);
  EXPECT_EQ(p.workspace, nullptr);
  EXPECT_EQ(p.workspace_bytes, 0);
  // The defaults match the C++ ones.
  const flash3::AttentionOptions o;
  EXPECT_EQ(p.window_left, o.window_left);
  EXPECT_EQ(p.window_right, o.window_right);
  EXPECT_EQ(p.softmax_scale, o.softmax_scale);
  flash3_attention_params_init(nullptr);  // no crash
}

TEST(CApi, StatusNames) {
  EXPECT_STREQ(flash3_status_name(FLASH3_STATUS_SUCCESS), "FLASH3_STATUS_SUCCESS");
  EXPECT_STREQ(flash3_status_name(FLASH3_STATUS_INVALID_ARGUMENT), "FLASH3_STATUS_INVALID_ARGUMENT");
  EXPECT_STREQ(flash3_status_name(FLASH3_STATUS_NOT_SUPPORTED), "FLASH3_STATUS_NOT_SUPPORTED");
  EXPECT_STREQ(flash3_status_name(FLASH3_STATUS_NO_DEVICE), "FLASH3_STATUS_NO_DEVICE");
  EXPECT_STREQ(flash3_status_name(FLASH3_STATUS_CUDA_ERROR), "FLASH3_STATUS_CUDA_ERROR");
  EXPECT_STREQ(flash3_status_name(FLASH3_STATUS_INTERNAL_ERROR), "FLASH3_STATUS_INTERNAL_ERROR");
  // Values no enumerator names (within the enum's value range: C++ leaves casts beyond it undefined).
  EXPECT_STREQ(flash3_status_name(static_cast<flash3_status>(6)), "FLASH3_STATUS_UNKNOWN");
  EXPECT_STREQ(flash3_status_name(static_cast<flash3_status>(7)), "FLASH3_STATUS_UNKNOWN");
}

TEST(CApi, ValidParamsPass) {
  const flash3_attention_params p = valid_params();
  EXPECT_EQ(flash3_validate_forward(&p, 90), FLASH3_STATUS_SUCCESS) << flash3_last_error();
  EXPECT_EQ(flash3_validate_backward(&p, 90), FLASH3_STATUS_SUCCESS) << flash3_last_error();
  // Varlen through the C struct.
  flash3_attention_params v = valid_params();
  v.q = tensor(0x100000, FLASH3_DTYPE_FLOAT16, {40, 8, 64});
  v.k = tensor(0x200000, FLASH3_DTYPE_FLOAT16, {50, 2, 64});
  v.v = tensor(0x300000, FLASH3_DTYPE_FLOAT16, {50, 2, 64});
  v.out = tensor(0x400000, FLASH3_DTYPE_FLOAT16, {40, 8, 64});
  v.lse = tensor(0x500000, FLASH3_DTYPE_FLOAT32, {8, 40});
  v.cu_seqlens_q = reinterpret_cast<const int32_t*>(0x600000);
  v.cu_seqlens_k = reinterpret_cast<const int32_t*>(0x600100);
  v.varlen_batch = 3;
  v.max_seqlen_q = 20;
  v.max_seqlen_k = 30;
  v.causal = 1;
  v.window_left = 16;
  v.window_right = 0;
  v.softcap = 50.0f;
  EXPECT_EQ(flash3_validate_forward(&v, 90), FLASH3_STATUS_SUCCESS) << flash3_last_error();
}

TEST(CApi, ErrorPathSetsLastError) {
  flash3_attention_params p = valid_params();
  p.k = tensor(0x200000, FLASH3_DTYPE_BFLOAT16, {2, 24, 3, 64});
  p.v = tensor(0x300000, FLASH3_DTYPE_BFLOAT16, {2, 24, 3, 64});
  EXPECT_EQ(flash3_validate_forward(&p, 90), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flash3_last_error(), "flash3::forward: k.shape[2] (num_heads_k) = 3 must divide"))
      << flash3_last_error();
  // The entry points check arguments before looking for a device, so the same error comes with or without a GPU.
  EXPECT_EQ(flash3_forward(&p), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flash3_last_error(), "k.shape[2] (num_heads_k) = 3")) << flash3_last_error();

  flash3_attention_params b = valid_params();
  b.dq.stride[3] = 2;
  EXPECT_EQ(flash3_backward(&b), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flash3_last_error(), "flash3::backward: dq.stride[3]")) << flash3_last_error();

  flash3_attention_params w = valid_params();
  w.causal = 1;
  w.window_right = 3;
  int64_t bytes = -12345;
  EXPECT_EQ(flash3_forward_workspace_size(&w, &bytes), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flash3_last_error(), "causal=true requires window_right in {-1, 0}")) << flash3_last_error();
  EXPECT_EQ(bytes, -12345);  // a failed call writes no output
  EXPECT_EQ(flash3_backward_workspace_size(&w, &bytes), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(bytes, -12345);
}

TEST(CApi, StatusCodesMapFromErrors) {
  flash3_attention_params p = valid_params();
  for (flash3_tensor* t : {&p.q, &p.k, &p.v}) t->dtype = FLASH3_DTYPE_FLOAT8_E4M3;
  p.softcap = 10.f;  // valid in general, but the FP8 forward has no softcap kernels
  EXPECT_EQ(flash3_validate_forward(&p, 90), FLASH3_STATUS_NOT_SUPPORTED);
  EXPECT_TRUE(contains(flash3_last_error(), "FP8 forward has no softcap")) << flash3_last_error();

  const flash3_attention_params ok = valid_params();
  EXPECT_EQ(flash3_validate_forward(&ok, 80), FLASH3_STATUS_NOT_SUPPORTED);
  EXPECT_TRUE(contains(flash3_last_error(), "this GPU is sm_80")) << flash3_last_error();
  EXPECT_EQ(flash3_validate_backward(&ok, 75), FLASH3_STATUS_NOT_SUPPORTED);
  EXPECT_TRUE(contains(flash3_last_error(), "flash3::backward: ")) << flash3_last_error();
}

TEST(CApi, NullParams) {
  int64_t bytes = 7;
  EXPECT_EQ(flash3_forward(nullptr), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flash3_last_error(), "flash3_forward: params is NULL")) << flash3_last_error();
  EXPECT_EQ(flash3_backward(nullptr), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flash3_last_error(), "flash3_backward: params is NULL")) << flash3_last_error();
  EXPECT_EQ(flash3_forward_workspace_size(nullptr, &bytes), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(flash3_backward_workspace_size(nullptr, &bytes), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flash3_last_error(), "params is NULL")) << flash3_last_error();
  EXPECT_EQ(bytes, 7);
  EXPECT_EQ(flash3_validate_forward(nullptr, 90), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(flash3_validate_backward(nullptr, 90), FLASH3_STATUS_INVALID_ARGUMENT);
  // A NULL output pointer for the size.
  const flash3_attention_params p = valid_params();
  EXPECT_EQ(flash3_forward_workspace_size(&p, nullptr), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flash3_last_error(), "bytes is NULL")) << flash3_last_error();
  EXPECT_EQ(flash3_backward_workspace_size(&p, nullptr), FLASH3_STATUS_INVALID_ARGUMENT);
}

TEST(CApi, WrongStructSize) {
  flash3_attention_params p = valid_params();
  p.struct_size = 0;  // e.g. the caller forgot flash3_attention_params_init
  EXPECT_EQ(flash3_validate_forward(&p, 90), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flash3_last_error(), "params->struct_size = 0")) << flash3_last_error();
  p.struct_size = offsetof(flash3_attention_params, workspace_bytes);  // shorter than version 1
  EXPECT_EQ(flash3_forward(&p), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flash3_last_error(), "struct_size")) << flash3_last_error();
  EXPECT_EQ(flash3_validate_backward(&p, 90), FLASH3_STATUS_INVALID_ARGUMENT);
  // A version-1 caller (no descale fields) is accepted and its missing fields read as "not given": the garbage
  // past its struct_size must not be read as a descale tensor.
  p = valid_params();
  p.q_descale.data = reinterpret_cast<void*>(0x1000);
  p.q_descale.rank = 1;
  EXPECT_EQ(flash3_validate_forward(&p, 90), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flash3_last_error(), "q_descale is given")) << flash3_last_error();
  p.struct_size = offsetof(flash3_attention_params, q_descale);
  EXPECT_EQ(flash3_validate_forward(&p, 90), FLASH3_STATUS_SUCCESS) << flash3_last_error();
  // A newer caller's larger struct is accepted (fields are only appended).
  p = valid_params();
  p.struct_size = sizeof(flash3_attention_params) + 64;
  EXPECT_EQ(flash3_validate_forward(&p, 90), FLASH3_STATUS_SUCCESS) << flash3_last_error();
}

TEST(CApi, InvalidEnumValuesDoNotEscape) {
  // Values no C++ enum holds must come back as statuses, never as exceptions or undefined behaviour.
  flash3_attention_params p = valid_params();
  p.q.dtype = 42;
  EXPECT_EQ(flash3_forward(&p), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flash3_last_error(), "params->q.dtype = 42 is not a flash3_dtype value"))
      << flash3_last_error();
  p = valid_params();
  p.dv.dtype = -1;
  EXPECT_EQ(flash3_backward(&p), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flash3_last_error(), "params->dv.dtype = -1")) << flash3_last_error();
  // dv is backward-only: forward ignores it.
  EXPECT_EQ(flash3_validate_forward(&p, 90), FLASH3_STATUS_SUCCESS) << flash3_last_error();
  // A tensor that is not given may hold any dtype value.
  p = valid_params();
  std::memset(&p.lse, 0, sizeof(p.lse));
  p.lse.dtype = 77;
  EXPECT_EQ(flash3_validate_forward(&p, 90), FLASH3_STATUS_SUCCESS) << flash3_last_error();
  // Booleans are 0 or 1.
  p = valid_params();
  p.causal = 2;
  EXPECT_EQ(flash3_validate_forward(&p, 90), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flash3_last_error(), "params->causal = 2, expected 0 or 1")) << flash3_last_error();
  p = valid_params();
  p.deterministic = -1;
  EXPECT_EQ(flash3_validate_backward(&p, 90), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flash3_last_error(), "params->deterministic = -1")) << flash3_last_error();
  // Absurd ranks and shapes are ordinary argument errors.
  p = valid_params();
  p.q.rank = -3;
  EXPECT_EQ(flash3_validate_forward(&p, 90), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flash3_last_error(), "q.rank = -3")) << flash3_last_error();
  p = valid_params();
  p.k.shape[1] = INT64_MAX;
  p.v.shape[1] = INT64_MAX;
  EXPECT_EQ(flash3_validate_forward(&p, 90), FLASH3_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flash3_last_error(), "exceeds the int32 limit")) << flash3_last_error();
}

TEST(CApi, LastErrorIsThreadLocalAndErrnoLike) {
  std::string fresh, after_failure, after_success;
  std::thread worker([&] {
    fresh = flash3_last_error();
    flash3_attention_params p = valid_params();
    p.out.data = nullptr;
    EXPECT_EQ(flash3_validate_forward(&p, 90), FLASH3_STATUS_INVALID_ARGUMENT);
    after_failure = flash3_last_error();
    const flash3_attention_params ok = valid_params();
    EXPECT_EQ(flash3_validate_forward(&ok, 90), FLASH3_STATUS_SUCCESS);
    after_success = flash3_last_error();
  });
  worker.join();
  EXPECT_EQ(fresh, "");  // no failure on that thread yet
  EXPECT_NE(after_failure.find("out.data is null"), std::string::npos) << after_failure;
  EXPECT_EQ(after_success, after_failure);  // a success does not clear the message

  // This thread's message is its own.
  EXPECT_EQ(flash3_forward(nullptr), FLASH3_STATUS_INVALID_ARGUMENT);
  std::string other;
  std::thread reader([&] { other = flash3_last_error(); });
  reader.join();
  EXPECT_EQ(other, "");
  EXPECT_TRUE(contains(flash3_last_error(), "params is NULL"));
}

TEST(CApi, NoDevice) {
  if (has_cuda_device()) GTEST_SKIP() << "a CUDA device is present";
  const flash3_attention_params p = valid_params();
  EXPECT_EQ(flash3_forward(&p), FLASH3_STATUS_NO_DEVICE);
  EXPECT_TRUE(contains(flash3_last_error(), "no CUDA device")) << flash3_last_error();
  EXPECT_EQ(flash3_backward(&p), FLASH3_STATUS_NO_DEVICE);
  EXPECT_EQ(flash3_validate_forward(&p, 0), FLASH3_STATUS_NO_DEVICE);
}

TEST(CApi, KernelList) {
  const char* list = flash3_kernel_list();
  ASSERT_NE(list, nullptr);
  EXPECT_EQ(flash3_kernel_list(), flash3_kernel_list());  // one string for the library's lifetime
}

}  // namespace
