// flash3-bench internals shared by its translation units: device helpers (device_kernels.cu), NVML loaded at run
// time (nvml_dl.cpp), the hardware ceilings (ceilings.cpp) and timing utilities (util.cpp). Nothing here is part of
// the flash3 library.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "flash3/types.hpp"

namespace flash3_bench {

// ---- device helpers (device_kernels.cu) -------------------------------------------------------------------------

// Fills n elements of `dtype` with N(0, stddev^2) pseudo-random values (a counter hash, so the same seed gives the
// same data). dtype is one of kFloat16, kBFloat16, kFloat32, kFloat8E4M3. Returns the launch's error.
cudaError_t fill_random(void* data, flash3::DType dtype, int64_t n, uint64_t seed, float stddev, cudaStream_t stream);

// A naive fp32 attention over selected query rows, for --check. Shapes are the flash3 batch-mode layouts:
// q (b, sq, h, d), k (b, sk, hk, d), v (b, sk, hk, dv), all contiguous; d and dv at most 256. For each selected
// (row_batch[r], row_index[r]) pair and every head it writes out_ref[(r * h + head) * dv + c] and
// lse_ref[r * h + head] (natural log; out 0 and lse -inf for a row that sees no key).
struct NaiveProblem {
  flash3::DType dtype = flash3::DType::kBFloat16;  // kFloat16 or kBFloat16
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  int32_t batch = 0, seqlen_q = 0, seqlen_k = 0, heads = 0, heads_k = 0, head_dim = 0, head_dim_v = 0;
  float softmax_scale = 0.f;  // the actual scale (already resolved from the default)
  float softcap = 0.f;        // > 0: scores = softcap * tanh(scale * qk / softcap)
  int32_t window_left = -1, window_right = -1;  // the resolved mask (causal is window_right = 0)
};
constexpr int kNaiveMaxHeadDim = 256;

// Enqueues a one-thread kernel that spins for `ms` milliseconds of GPU time (the global nanosecond timer). Put
// before a batch of timed calls, it lets the host queue all of them before the GPU reaches the first, so that the
// events measure the GPU alone and not the host's launch overhead.
cudaError_t gpu_sleep(double ms, cudaStream_t stream);
cudaError_t naive_attention_rows(const NaiveProblem& p, const int32_t* row_batch, const int32_t* row_index,
                                 int32_t n_rows, float* out_ref, float* lse_ref, cudaStream_t stream);

// ---- NVML through dlopen (nvml_dl.cpp) --------------------------------------------------------------------------

// Everything NVML can tell about one GPU; a field that could not be read is -1 (and `error` says why for the whole
// object when NVML itself is missing).
struct GpuState {
  bool available = false;
  std::string error;           // why NVML is not available ("" when it is)
  int sm_clock_mhz = -1;       // current
  int mem_clock_mhz = -1;      // current
  int max_sm_clock_mhz = -1;
  int max_mem_clock_mhz = -1;
  double power_limit_w = -1;   // enforced power limit
  double power_draw_w = -1;
  int temperature_c = -1;
  long long clock_event_reasons = -1;  // bitmask of why clocks are held down (NVML_CLOCKS_EVENT_REASON_*)
};

// Opens NVML (once) and finds the NVML device that matches the CUDA device `cuda_device` by PCI bus id.
class Nvml {
 public:
  static Nvml& instance();
  bool ok() const { return device_ != nullptr; }
  const std::string& error() const { return error_; }
  GpuState query() const;       // every field
  int sm_clock_mhz() const;     // just the current SM clock (cheap; -1 if unknown)
  bool open(int cuda_device);   // returns ok()

 private:
  Nvml() = default;
  ~Nvml();
  void* lib_ = nullptr;
  void* device_ = nullptr;  // nvmlDevice_t
  std::string error_ = "NVML not opened";
};

// ---- ceilings (ceilings.cpp) ------------------------------------------------------------------------------------

struct Ceiling {
  bool ok = false;
  double value = 0;     // TFLOPS for GEMMs, GB/s for the copy
  double ms = 0;        // median time of one run
  int sm_clock_mhz = -1;
  std::string note;     // the reason when !ok, or what was measured
};

struct Ceilings {
  Ceiling bf16_gemm;  // cublasGemmEx bf16 in, bf16 out, fp32 accumulation, 8192^3
  Ceiling fp8_gemm;   // cublasLtMatmul e4m3 x e4m3 -> bf16, fp32 accumulation, 8192^3
  Ceiling copy;       // cudaMemcpy device to device, 1 GiB, bytes read + written
};

Ceilings measure_ceilings(int gemm_n, int64_t copy_bytes, int warmup, int iters, cudaStream_t stream);

// ---- small utilities (util.cpp) ---------------------------------------------------------------------------------

// A failed CUDA / cuBLAS call inside the bench (not inside flash3, which throws flash3::Error).
class BenchError : public std::runtime_error {
 public:
  explicit BenchError(const std::string& message) : std::runtime_error(message) {}
};

// Throws BenchError("<what>: <error name> (<error string>)") unless e == cudaSuccess.
void check_cuda(cudaError_t e, const std::string& what);

// Owning device allocation; move-only. Throws BenchError when cudaMalloc fails.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes, const std::string& what = "buffer");
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }
  void reset();

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

struct Timing {
  double median_ms = 0, min_ms = 0, max_ms = 0;
  int iters = 0;
  int sm_clock_mhz = -1;  // NVML SM clock sampled while the timed calls were in flight (-1: unknown)
  double enqueue_ms = 0;  // host wall time to enqueue the timed calls
  bool backlog_short = false;  // backlog_ms > 0 but enqueueing took longer than the GPU sleep
};

// Runs `warmup` untimed calls of run(i), then `iters` calls each between two cudaEvents on `stream`, and returns
// the median. `between(i)` (may be empty) is enqueued before every call, outside the timed region (an L2 flush).
// backlog_ms > 0 enqueues a GPU sleep of that length before the timed calls (gpu_sleep); Timing::backlog_short
// reports whether the host took longer than that to enqueue them (then the first calls may include launch gaps).
// run/between must enqueue on `stream`. Throws BenchError on a CUDA failure; exceptions of run() pass through.
Timing time_calls(const std::function<void(int)>& run, const std::function<void(int)>& between, int warmup,
                  int iters, cudaStream_t stream, double backlog_ms = 0.0);

double median(std::vector<double> v);

}  // namespace flash3_bench
