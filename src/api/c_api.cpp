// The C ABI (include/flash3/flash3_c.h): converts the C structs to the C++ ones, calls the C++ entry points and turns
// every exception into a status code plus a thread-local message. Nothing thrown escapes an extern "C" function.
#include "flash3/flash3_c.h"

#include <cstddef>
#include <exception>
#include <new>
#include <string>

#include "flash3/flash3.hpp"
#include "flash3/fp8.hpp"

using flash3::DType;
using flash3::Error;
using flash3::Status;
using flash3::TensorRef;

// The C and C++ enums are one table; keep them so.
static_assert(FLASH3_MAX_RANK == TensorRef::kMaxRank, "FLASH3_MAX_RANK != TensorRef::kMaxRank");
static_assert(FLASH3_DTYPE_FLOAT16 == static_cast<int>(DType::kFloat16), "dtype values differ");
static_assert(FLASH3_DTYPE_BFLOAT16 == static_cast<int>(DType::kBFloat16), "dtype values differ");
static_assert(FLASH3_DTYPE_FLOAT32 == static_cast<int>(DType::kFloat32), "dtype values differ");
static_assert(FLASH3_DTYPE_FLOAT8_E4M3 == static_cast<int>(DType::kFloat8E4M3), "dtype values differ");
static_assert(FLASH3_DTYPE_INT32 == static_cast<int>(DType::kInt32), "dtype values differ");
static_assert(FLASH3_STATUS_SUCCESS == static_cast<int>(Status::kSuccess), "status values differ");
static_assert(FLASH3_STATUS_INVALID_ARGUMENT == static_cast<int>(Status::kInvalidArgument), "status values differ");
static_assert(FLASH3_STATUS_NOT_SUPPORTED == static_cast<int>(Status::kNotSupported), "status values differ");
static_assert(FLASH3_STATUS_NO_DEVICE == static_cast<int>(Status::kNoDevice), "status values differ");
static_assert(FLASH3_STATUS_CUDA_ERROR == static_cast<int>(Status::kCudaError), "status values differ");
static_assert(FLASH3_STATUS_INTERNAL_ERROR == static_cast<int>(Status::kInternalError), "status values differ");

namespace {

// Version 1 of flash3_attention_params ends with workspace_bytes. A caller compiled against a later header passes
// a larger struct_size (fields are only appended), which is fine; a smaller one would make us read past its struct.
constexpr size_t kParamsV1Size = offsetof(flash3_attention_params, workspace_bytes) + sizeof(int64_t);
// Version 2 appends the FP8 descale tensors; a version-1 caller's struct ends before them (read as "not given").
constexpr size_t kParamsV2Size = offsetof(flash3_attention_params, v_descale) + sizeof(flash3_tensor);

// errno-like: set by failing calls only (see flash3_last_error in the header).
thread_local std::string t_last_error;
// Used instead of t_last_error when recording the message itself ran out of memory.
thread_local const char* t_last_error_static = nullptr;

template <class... Parts>
void set_last_error(const Parts&... parts) noexcept {
  try {
    std::string msg;
    (msg += ... += parts);
    t_last_error = std::move(msg);
    t_last_error_static = nullptr;
  } catch (...) {
    t_last_error_static = "flash3: out of host memory while recording an error message";
  }
}

flash3_status to_c_status(Status s) {
  switch (s) {
    case Status::kInvalidArgument: return FLASH3_STATUS_INVALID_ARGUMENT;
    case Status::kNotSupported: return FLASH3_STATUS_NOT_SUPPORTED;
    case Status::kNoDevice: return FLASH3_STATUS_NO_DEVICE;
    case Status::kCudaError: return FLASH3_STATUS_CUDA_ERROR;
    case Status::kInternalError: return FLASH3_STATUS_INTERNAL_ERROR;
    case Status::kSuccess: break;  // an Error carrying kSuccess is a bug; never let it read as success
  }
  return FLASH3_STATUS_INTERNAL_ERROR;
}

// Runs `body`, mapping every exception to a status and the thread-local message. `fn` names the C function.
template <class Body>
flash3_status guarded(const char* fn, Body&& body) noexcept {
  try {
    body();
    return FLASH3_STATUS_SUCCESS;
  } catch (const Error& e) {
    set_last_error(e.what());
    return to_c_status(e.status());
  } catch (const std::bad_alloc&) {
    set_last_error(fn, ": out of host memory");
  } catch (const std::exception& e) {
    set_last_error(fn, ": internal error: ", e.what());
  } catch (...) {
    set_last_error(fn, ": internal error: unknown exception");
  }
  return FLASH3_STATUS_INTERNAL_ERROR;
}

[[noreturn]] void fail(const char* fn, const std::string& what) {
  throw Error(Status::kInvalidArgument, std::string(fn) + ": " + what);
}

void check_params(const char* fn, const flash3_attention_params* p) {
  if (p == nullptr) fail(fn, "params is NULL");
  if (p->struct_size < kParamsV1Size)
    fail(fn, "params->struct_size = " + std::to_string(p->struct_size) + ", expected >= " +
                 std::to_string(kParamsV1Size) +
                 " (set it to sizeof(flash3_attention_params), e.g. with flash3_attention_params_init)");
}

TensorRef to_tensor(const char* fn, const flash3_tensor& in, const char* name) {
  TensorRef t;
  t.data = in.data;
  t.rank = in.rank;
  for (int i = 0; i < FLASH3_MAX_RANK; ++i) {
    t.shape[i] = in.shape[i];
    t.stride[i] = in.stride[i];
  }
  const bool given = in.data != nullptr || in.rank != 0;
  if (in.dtype >= FLASH3_DTYPE_FLOAT16 && in.dtype <= FLASH3_DTYPE_INT32) {
    t.dtype = static_cast<DType>(in.dtype);
  } else if (given) {
    fail(fn, std::string("params->") + name + ".dtype = " + std::to_string(in.dtype) +
                 " is not a flash3_dtype value (FLASH3_DTYPE_FLOAT16 = 0 .. FLASH3_DTYPE_INT32 = 4)");
  }  // else: a tensor that is not given keeps the default dtype; its dtype field is never looked at
  return t;
}

bool to_bool(const char* fn, int32_t v, const char* name) {
  if (v != 0 && v != 1) fail(fn, std::string("params->") + name + " = " + std::to_string(v) + ", expected 0 or 1");
  return v != 0;
}

flash3::VarlenArgs to_varlen(const flash3_attention_params& p) {
  flash3::VarlenArgs v;
  v.cu_seqlens_q = p.cu_seqlens_q;
  v.cu_seqlens_k = p.cu_seqlens_k;
  v.seqused_q = p.seqused_q;
  v.seqused_k = p.seqused_k;
  v.batch = p.varlen_batch;
  v.max_seqlen_q = p.max_seqlen_q;
  v.max_seqlen_k = p.max_seqlen_k;
  return v;
}

flash3::AttentionOptions to_options(const char* fn, const flash3_attention_params& p) {
  flash3::AttentionOptions o;
  o.softmax_scale = p.softmax_scale;
  o.causal = to_bool(fn, p.causal, "causal");
  o.window_left = p.window_left;
  o.window_right = p.window_right;
  o.softcap = p.softcap;
  o.deterministic = to_bool(fn, p.deterministic, "deterministic");
  o.stream = p.stream;
  return o;
}

flash3::ForwardArgs to_forward_args(const char* fn, const flash3_attention_params* p) {
  check_params(fn, p);
  flash3::ForwardArgs a;
  a.q = to_tensor(fn, p->q, "q");
  a.k = to_tensor(fn, p->k, "k");
  a.v = to_tensor(fn, p->v, "v");
  a.out = to_tensor(fn, p->out, "out");
  a.lse = to_tensor(fn, p->lse, "lse");
  a.varlen = to_varlen(*p);
  a.options = to_options(fn, *p);
  a.workspace = p->workspace;
  a.workspace_bytes = p->workspace_bytes;
  if (p->struct_size >= kParamsV2Size) {
    a.q_descale = to_tensor(fn, p->q_descale, "q_descale");
    a.k_descale = to_tensor(fn, p->k_descale, "k_descale");
    a.v_descale = to_tensor(fn, p->v_descale, "v_descale");
  }
  return a;
}

flash3::BackwardArgs to_backward_args(const char* fn, const flash3_attention_params* p) {
  check_params(fn, p);
  flash3::BackwardArgs a;
  a.q = to_tensor(fn, p->q, "q");
  a.k = to_tensor(fn, p->k, "k");
  a.v = to_tensor(fn, p->v, "v");
  a.out = to_tensor(fn, p->out, "out");
  a.lse = to_tensor(fn, p->lse, "lse");
  a.dout = to_tensor(fn, p->dout, "dout");
  a.dq = to_tensor(fn, p->dq, "dq");
  a.dk = to_tensor(fn, p->dk, "dk");
  a.dv = to_tensor(fn, p->dv, "dv");
  a.varlen = to_varlen(*p);
  a.options = to_options(fn, *p);
  a.workspace = p->workspace;
  a.workspace_bytes = p->workspace_bytes;
  return a;
}

void check_bytes_out(const char* fn, const int64_t* bytes) {
  if (bytes == nullptr) fail(fn, "bytes is NULL (it receives the workspace size)");
}

}  // namespace

extern "C" {

void flash3_attention_params_init(flash3_attention_params* params) {
  if (params == nullptr) return;
  *params = flash3_attention_params{};  // value-initialisation: every field zero / NULL
  params->struct_size = sizeof(flash3_attention_params);
  params->window_left = -1;
  params->window_right = -1;
}

flash3_status flash3_forward(const flash3_attention_params* params) {
  static const char* const fn = "flash3_forward";
  return guarded(fn, [&] { flash3::forward(to_forward_args(fn, params)); });
}

flash3_status flash3_forward_workspace_size(const flash3_attention_params* params, int64_t* bytes) {
  static const char* const fn = "flash3_forward_workspace_size";
  return guarded(fn, [&] {
    check_bytes_out(fn, bytes);
    const int64_t n = flash3::forward_workspace_size(to_forward_args(fn, params));
    *bytes = n;  // only on success
  });
}

flash3_status flash3_backward(const flash3_attention_params* params) {
  static const char* const fn = "flash3_backward";
  return guarded(fn, [&] { flash3::backward(to_backward_args(fn, params)); });
}

flash3_status flash3_backward_workspace_size(const flash3_attention_params* params, int64_t* bytes) {
  static const char* const fn = "flash3_backward_workspace_size";
  return guarded(fn, [&] {
    check_bytes_out(fn, bytes);
    const int64_t n = flash3::backward_workspace_size(to_backward_args(fn, params));
    *bytes = n;
  });
}

flash3_status flash3_validate_forward(const flash3_attention_params* params, int32_t arch) {
  static const char* const fn = "flash3_validate_forward";
  return guarded(fn, [&] { flash3::validate_forward(to_forward_args(fn, params), arch); });
}

flash3_status flash3_validate_backward(const flash3_attention_params* params, int32_t arch) {
  static const char* const fn = "flash3_validate_backward";
  return guarded(fn, [&] { flash3::validate_backward(to_backward_args(fn, params), arch); });
}

// ---- FP8 (flash3/fp8.hpp) ----

void flash3_fp8_options_init(flash3_fp8_options* options) {
  if (options == nullptr) return;
  *options = flash3_fp8_options{};
  options->struct_size = sizeof(flash3_fp8_options);
  options->block_quantization = 1;
  options->incoherent_processing = 1;
}

}  // extern "C"

namespace {
flash3::Fp8ForwardArgs to_fp8_args(const char* fn, const flash3_attention_params* p, const flash3_fp8_options* o) {
  const flash3::ForwardArgs f = to_forward_args(fn, p);
  if (f.varlen.enabled()) throw Error(Status::kNotSupported, std::string(fn) + ": varlen is not supported");
  if (f.q_descale.defined() || f.k_descale.defined() || f.v_descale.defined())
    fail(fn, "params->q_descale/k_descale/v_descale must not be given (the quantise step computes them)");
  if (o == nullptr) fail(fn, "options is NULL (use flash3_fp8_options_init)");
  if (o->struct_size < sizeof(flash3_fp8_options))
    fail(fn, "options->struct_size = " + std::to_string(o->struct_size) + ", expected " +
                 std::to_string(sizeof(flash3_fp8_options)));
  flash3::Fp8ForwardArgs a;
  a.q = f.q;
  a.k = f.k;
  a.v = f.v;
  a.out = f.out;
  a.lse = f.lse;
  a.options = f.options;
  a.workspace = f.workspace;
  a.workspace_bytes = f.workspace_bytes;
  a.fp8.block_quantization = to_bool(fn, o->block_quantization, "block_quantization");
  a.fp8.incoherent_processing = to_bool(fn, o->incoherent_processing, "incoherent_processing");
  a.fp8.seed = o->seed;
  return a;
}
}  // namespace

extern "C" {

flash3_status flash3_fp8_forward(const flash3_attention_params* params, const flash3_fp8_options* options) {
  static const char* const fn = "flash3_fp8_forward";
  return guarded(fn, [&] { flash3::fp8_forward(to_fp8_args(fn, params, options)); });
}

flash3_status flash3_fp8_forward_workspace_size(const flash3_attention_params* params,
                                                const flash3_fp8_options* options, int64_t* bytes) {
  static const char* const fn = "flash3_fp8_forward_workspace_size";
  return guarded(fn, [&] {
    check_bytes_out(fn, bytes);
    const int64_t n = flash3::fp8_forward_workspace_size(to_fp8_args(fn, params, options));
    *bytes = n;
  });
}

flash3_status flash3_fp8_block_shape(int32_t head_dim, int32_t* block_m, int32_t* block_n) {
  static const char* const fn = "flash3_fp8_block_shape";
  return guarded(fn, [&] {
    if (block_m == nullptr || block_n == nullptr) fail(fn, "block_m and block_n must not be NULL");
    const flash3::Fp8BlockShape b = flash3::fp8_block_shape(head_dim);
    *block_m = b.block_m;
    *block_n = b.block_n;
  });
}

const char* flash3_last_error(void) {
  return t_last_error_static != nullptr ? t_last_error_static : t_last_error.c_str();
}

const char* flash3_status_name(flash3_status status) {
  switch (status) {
    case FLASH3_STATUS_SUCCESS: return "FLASH3_STATUS_SUCCESS";
    case FLASH3_STATUS_INVALID_ARGUMENT: return "FLASH3_STATUS_INVALID_ARGUMENT";
    case FLASH3_STATUS_NOT_SUPPORTED: return "FLASH3_STATUS_NOT_SUPPORTED";
    case FLASH3_STATUS_NO_DEVICE: return "FLASH3_STATUS_NO_DEVICE";
    case FLASH3_STATUS_CUDA_ERROR: return "FLASH3_STATUS_CUDA_ERROR";
    case FLASH3_STATUS_INTERNAL_ERROR: return "FLASH3_STATUS_INTERNAL_ERROR";
  }
  return "FLASH3_STATUS_UNKNOWN";
}

const char* flash3_version(void) { return flash3::version_string(); }

int32_t flash3_c_api_version(void) { return FLASH3_C_API_VERSION; }

const char* flash3_kernel_list(void) {
  const char* list = "";
  guarded("flash3_kernel_list", [&] {
    // Built once; a function-local static whose initialiser throws is retried on the next call.
    static const std::string kernels = flash3::describe_kernels();
    list = kernels.c_str();
  });
  return list;
}

}  // extern "C"
