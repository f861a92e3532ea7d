// flash3 public types: plain structs that describe tensors and options. No CUDA, CUTLASS or CuTe types here,
// so the header is usable from any C++17 translation unit (and mirrors the C ABI in flash3_c.h one to one).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

namespace flash3 {

// Element types. Values match FLASH3_DTYPE_* in flash3_c.h.
enum class DType : int32_t {
  kFloat16 = 0,
  kBFloat16 = 1,
  kFloat32 = 2,
  kFloat8E4M3 = 3,
  kInt32 = 4,
};

const char* dtype_name(DType dtype);
int64_t dtype_size(DType dtype);

// Status codes. Values match FLASH3_STATUS_* in flash3_c.h.
enum class Status : int32_t {
  kSuccess = 0,
  kInvalidArgument = 1,   // a shape, stride, dtype, pointer or option is wrong
  kNotSupported = 2,      // valid request, but no compiled kernel or no support on this GPU architecture
  kNoDevice = 3,          // no CUDA device is present or usable
  kCudaError = 4,         // a CUDA runtime call failed
  kInternalError = 5,
};

// A strided view of device memory. Shapes and strides are in elements; strides are 64-bit so tensors over 2^31
// elements work. Unused trailing dims are ignored (rank says how many are valid).
struct TensorRef {
  static constexpr int kMaxRank = 5;
  void* data = nullptr;
  DType dtype = DType::kBFloat16;
  int32_t rank = 0;
  int64_t shape[kMaxRank] = {0, 0, 0, 0, 0};
  int64_t stride[kMaxRank] = {0, 0, 0, 0, 0};

  bool defined() const { return data != nullptr || rank != 0; }
};

// Makes a TensorRef; strides default to contiguous (row-major) when `strides` is null.
TensorRef make_tensor(void* data, DType dtype, std::initializer_list<int64_t> shape,
                      std::initializer_list<int64_t> strides = {});

// Options shared by forward and backward. Defaults match FA3's flash_attn_func.
struct AttentionOptions {
  // Scale applied to Q K^T. <= 0 means the default 1 / sqrt(head_dim); NaN or inf is rejected.
  float softmax_scale = 0.0f;
  // Causal mask aligned to the bottom-right corner when seqlen_q != seqlen_k (query i sees keys <= i + sk - sq).
  bool causal = false;
  // Sliding window (left, right); -1 means unbounded. Query i sees keys in [i + sk - sq - left, i + sk - sq + right].
  // causal == window (-1, 0); causal together with a window means (left, 0), and right must then be -1 or 0.
  int32_t window_left = -1;
  int32_t window_right = -1;
  // > 0: scores become softcap * tanh(score * softmax_scale / softcap) before masking.
  float softcap = 0.0f;
  // Backward only: bitwise reproducible dQ, dK, dV. Its summation order assumes the kernel can use every SM the
  // device reports; under MPS with a reduced active-thread percentage or in a green context, set the environment
  // variable FLASH3_DETERMINISTIC_CHUNK_CTAS to the CTAs that fit there (1: an order that assumes nothing, slower).
  bool deterministic = false;
  // cudaStream_t, passed as void* so this header needs no CUDA header. nullptr is the legacy default stream.
  void* stream = nullptr;
};

// Variable-length batches (FA3's varlen). When cu_seqlens_q is set, q/out are (total_q, h, d) and k/v are
// (total_k, h_k, d); lse is (h, total_q). All pointers are device int32 arrays.
struct VarlenArgs {
  const int32_t* cu_seqlens_q = nullptr;  // (batch + 1,), prefix sums of query lengths
  const int32_t* cu_seqlens_k = nullptr;  // (batch + 1,), prefix sums of key lengths
  const int32_t* seqused_q = nullptr;     // optional (batch,): only this many queries of each sequence are used
  const int32_t* seqused_k = nullptr;     // optional (batch,): only this many keys of each sequence are used
  int32_t batch = 0;                      // number of sequences (length of cu_seqlens minus one)
  int32_t max_seqlen_q = 0;
  int32_t max_seqlen_k = 0;

  bool enabled() const { return cu_seqlens_q != nullptr || cu_seqlens_k != nullptr; }
};

// Forward: out = softmax(mask(scale * q k^T)) v, lse = logsumexp of the masked scaled scores (natural log).
// Layouts (batch mode): q (b, sq, h, d), k (b, sk, hk, d), v (b, sk, hk, dv), out (b, sq, h, dv), lse (b, h, sq).
// Layouts (varlen):     q (tq, h, d),    k (tk, hk, d),     v (tk, hk, dv),     out (tq, h, dv),     lse (h, tq).
// The last dim of q, k, v, out must have stride 1. lse is fp32 and may be left undefined (not written).
struct ForwardArgs {
  TensorRef q, k, v, out, lse;
  VarlenArgs varlen;
  AttentionOptions options;
  // Device scratch of forward_workspace_size(args) bytes, not zeroed, reusable by later calls on the same stream.
  // Causal / local calls fail without it; others accept less (even null) and then take the exact-max softmax,
  // which is slower. flash3 never allocates during a call, so calls can be captured in a CUDA graph.
  void* workspace = nullptr;
  int64_t workspace_bytes = 0;
  // FP8 (e4m3) inputs only: fp32 factors that undo the quantisation (FA3's q_descale/k_descale/v_descale).
  // Undefined means 1.0. Giving one for fp16/bf16 inputs is an error.
  TensorRef q_descale, k_descale, v_descale;
};

// Backward: given dout, returns dq, dk, dv. out and lse are the forward's results (lse is required).
struct BackwardArgs {
  TensorRef q, k, v, out, lse, dout;
  TensorRef dq, dk, dv;
  VarlenArgs varlen;
  AttentionOptions options;
  void* workspace = nullptr;
  int64_t workspace_bytes = 0;
};

// The exception every entry point throws. message() names the argument and what was expected.
class Error : public std::runtime_error {
 public:
  Error(Status status, std::string message) : std::runtime_error(std::move(message)), status_(status) {}
  Status status() const { return status_; }

 private:
  Status status_;
};

}  // namespace flash3
