/* flash3 C ABI: the stable interface for the Python package and any other language.
 *
 * Plain C, POD structs. Every argument struct begins with `struct_size` (set it to sizeof(the struct)) so that the
 * library can tell which version of the struct a caller was compiled against; fields are only ever appended.
 * Functions return a flash3_status; on failure flash3_last_error() returns a thread-local message naming the
 * argument and the expected value. No function throws or aborts: C++ exceptions never cross this boundary.
 * A failed call writes no output (no tensor, and no *bytes of the workspace-size queries).
 */
#ifndef FLASH3_C_H_
#define FLASH3_C_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FLASH3_C_API_VERSION 2
#define FLASH3_MAX_RANK 5

typedef enum flash3_status {
  FLASH3_STATUS_SUCCESS = 0,
  FLASH3_STATUS_INVALID_ARGUMENT = 1,
  FLASH3_STATUS_NOT_SUPPORTED = 2,
  FLASH3_STATUS_NO_DEVICE = 3,
  FLASH3_STATUS_CUDA_ERROR = 4,
  FLASH3_STATUS_INTERNAL_ERROR = 5
} flash3_status;

typedef enum flash3_dtype {
  FLASH3_DTYPE_FLOAT16 = 0,
  FLASH3_DTYPE_BFLOAT16 = 1,
  FLASH3_DTYPE_FLOAT32 = 2,
  FLASH3_DTYPE_FLOAT8_E4M3 = 3,
  FLASH3_DTYPE_INT32 = 4
} flash3_dtype;

/* A strided device tensor; shape and strides in elements. data == NULL and rank == 0 means "not given". */
typedef struct flash3_tensor {
  void* data;
  int32_t dtype; /* flash3_dtype */
  int32_t rank;
  int64_t shape[FLASH3_MAX_RANK];
  int64_t stride[FLASH3_MAX_RANK];
} flash3_tensor;

/* Options and varlen arguments; see include/flash3/types.hpp for the exact semantics of each field. */
typedef struct flash3_attention_params {
  size_t struct_size; /* sizeof(flash3_attention_params) */
  flash3_tensor q, k, v, out, lse;
  flash3_tensor dout, dq, dk, dv; /* backward only; ignored by forward */
  const int32_t* cu_seqlens_q;    /* varlen: device (batch + 1,) or NULL */
  const int32_t* cu_seqlens_k;
  const int32_t* seqused_q; /* optional device (batch,) */
  const int32_t* seqused_k;
  int32_t varlen_batch;
  int32_t max_seqlen_q;
  int32_t max_seqlen_k;
  float softmax_scale; /* <= 0: 1 / sqrt(head_dim); NaN and infinities are rejected */
  int32_t causal;      /* 0 or 1 (other values are rejected) */
  int32_t window_left; /* -1: unbounded */
  int32_t window_right;
  float softcap; /* 0: off */
  int32_t deterministic; /* 0 or 1; backward only */
  void* stream; /* cudaStream_t; NULL = default stream */
  /* Device scratch of flash3_*_workspace_size bytes, not zeroed, reusable by later calls on the stream. A forward
   * without a mask accepts less (even none) and then takes the slower exact-max softmax. */
  void* workspace;
  int64_t workspace_bytes;
  /* ---- appended in C API version 2 (read only when struct_size covers them) ---- */
  /* FP8 (e4m3) forward only: fp32 descale factors that undo the quantisation of q, k, v. Not given: 1.0. See
   * include/flash3/types.hpp (ForwardArgs) for the accepted shapes. Giving one for fp16/bf16 inputs is an error. */
  flash3_tensor q_descale, k_descale, v_descale;
} flash3_attention_params;

/* Fills *params with the defaults (zeros, window -1/-1, struct_size set). Does nothing when params is NULL.
 * Callers must set struct_size (this does); a struct_size smaller than the fields this library reads is rejected. */
void flash3_attention_params_init(flash3_attention_params* params);

flash3_status flash3_forward(const flash3_attention_params* params);
/* *bytes is written only on success; bytes == NULL is an INVALID_ARGUMENT. */
flash3_status flash3_forward_workspace_size(const flash3_attention_params* params, int64_t* bytes);
flash3_status flash3_backward(const flash3_attention_params* params);
flash3_status flash3_backward_workspace_size(const flash3_attention_params* params, int64_t* bytes);

/* Checks params exactly as flash3_forward / flash3_backward would, launching nothing. `arch` is the SM version to
 * check against (e.g. 90); 0 means the current device's (NO_DEVICE when there is none). Argument checks come
 * before the device query, so a bad argument is reported as such even on a machine without a GPU. */
flash3_status flash3_validate_forward(const flash3_attention_params* params, int32_t arch);
flash3_status flash3_validate_backward(const flash3_attention_params* params, int32_t arch);

/* ---- FP8 forward with block quantisation and incoherent processing (include/flash3/fp8.hpp) ----
 * flash3_forward with e4m3 q, k, v runs the FP8 kernel directly (descales as in flash3/fp8.hpp). flash3_fp8_forward
 * takes fp16/bf16 q, k, v (batch mode, head_dim == head_dim_v in {64, 128, 256}), quantises them into the workspace
 * (optionally after the random Hadamard transform of q and k) and runs the FP8 kernel; out has q's dtype. */
typedef struct flash3_fp8_options {
  size_t struct_size;            /* sizeof(flash3_fp8_options) */
  int32_t block_quantization;    /* 0 or 1: one scale per block of rows (else per tensor) */
  int32_t incoherent_processing; /* 0 or 1: random-sign Hadamard transform of q and k */
  uint64_t seed;                 /* seed of the random signs */
} flash3_fp8_options;

/* Defaults: block quantisation and incoherent processing on, seed 0. */
void flash3_fp8_options_init(flash3_fp8_options* options);
flash3_status flash3_fp8_forward(const flash3_attention_params* params, const flash3_fp8_options* options);
flash3_status flash3_fp8_forward_workspace_size(const flash3_attention_params* params,
                                                const flash3_fp8_options* options, int64_t* bytes);
/* Rows per block-quantisation scale of the FP8 kernel for head_dim: block_m (queries), block_n (keys). */
flash3_status flash3_fp8_block_shape(int32_t head_dim, int32_t* block_m, int32_t* block_n);

/* Message of the last failed call on this thread ("" if no call on this thread has failed yet). errno-like: a
 * successful call leaves it unchanged, so read it only after a call returned something other than SUCCESS. The
 * pointer stays valid until the next failing call on this thread. */
const char* flash3_last_error(void);
/* Name of a status code, e.g. "FLASH3_STATUS_INVALID_ARGUMENT"; "FLASH3_STATUS_UNKNOWN" for other values. */
const char* flash3_status_name(flash3_status status);
/* "major.minor.patch" of the library, and the C API version it implements. */
const char* flash3_version(void);
int32_t flash3_c_api_version(void);
/* One line per compiled kernel variant; the string lives until the library is unloaded ("" if listing failed,
 * with flash3_last_error set). */
const char* flash3_kernel_list(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLASH3_C_H_ */
