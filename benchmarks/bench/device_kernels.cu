// Device helpers of flash3-bench: random fills (never zeros: zeros hide unwritten outputs and can run faster than
// real data) and the naive fp32 attention that --check compares flash3 against.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "bench_common.hpp"

namespace flash3_bench {
namespace {

// splitmix64: a counter-based hash, so every element is independent of the launch shape.
__device__ __forceinline__ uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// One N(0, 1) sample per index (Box-Muller on two 24-bit uniforms; u1 in (0, 1] so log never sees 0).
__device__ __forceinline__ float normal_sample(uint64_t seed, uint64_t index) {
  const uint64_t h = mix64(seed ^ mix64(index));
  const float u1 = (static_cast<float>(h >> 40) + 1.0f) * (1.0f / 16777216.0f);
  const float u2 = static_cast<float>((h >> 8) & 0xFFFFFFull) * (1.0f / 16777216.0f);
  return sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
}

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __nv_fp8_e4m3 from_float<__nv_fp8_e4m3>(float x) { return __nv_fp8_e4m3(x); }

__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__global__ void fill_random_kernel(T* data, int64_t n, uint64_t seed, float stddev) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    data[i] = from_float<T>(stddev * normal_sample(seed, static_cast<uint64_t>(i)));
  }
}

template <typename T>
cudaError_t launch_fill(void* data, int64_t n, uint64_t seed, float stddev, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  const int threads = 256;
  const int64_t wanted = (n + threads - 1) / threads;
  const int blocks = static_cast<int>(wanted < 65536 ? wanted : 65536);
  fill_random_kernel<T><<<blocks, threads, 0, stream>>>(static_cast<T*>(data), n, seed, stddev);
  return cudaGetLastError();
}

constexpr int kNaiveThreads = 256;
constexpr int kNaiveWarps = kNaiveThreads / 32;
constexpr int kPerLane = kNaiveMaxHeadDim / 32;  // columns of d (or dv) one lane owns

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// The scaled (and softcapped) score of query row `q_s` (fp32, in shared memory) against key row `k_row`. Every lane
// returns the same value.
template <typename T>
__device__ __forceinline__ float score(const float* q_s, const T* k_row, int d, float scale, float softcap, int lane) {
  float acc = 0.f;
#pragma unroll
  for (int t = 0; t < kPerLane; ++t) {
    const int c = lane + 32 * t;
    if (c < d) acc += q_s[c] * to_float(k_row[c]);
  }
  float s = warp_sum(acc) * scale;
  if (softcap > 0.f) s = softcap * tanhf(s / softcap);
  return s;
}

// One block per (selected row, head); each warp walks a strided subset of the visible keys. Two passes (max, then
// exp-sum and P V) instead of an online softmax: slower but obviously right, which is the point of a reference.
template <typename T>
__global__ void __launch_bounds__(kNaiveThreads)
    naive_rows_kernel(NaiveProblem p, const int32_t* row_batch, const int32_t* row_index, float* out_ref,
                      float* lse_ref) {
  __shared__ float q_s[kNaiveMaxHeadDim];
  __shared__ float red_s[kNaiveWarps];
  __shared__ float o_s[kNaiveWarps][kNaiveMaxHeadDim];

  const int r = blockIdx.x;
  const int head = blockIdx.y;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t b = row_batch[r];
  const int64_t i = row_index[r];
  const int head_k = head / (p.heads / p.heads_k);
  const int d = p.head_dim;
  const int dv = p.head_dim_v;

  const T* q = static_cast<const T*>(p.q) + ((b * p.seqlen_q + i) * p.heads + head) * d;
  for (int c = threadIdx.x; c < d; c += blockDim.x) q_s[c] = to_float(q[c]);
  __syncthreads();

  // Visible keys [lo, hi] of row i (bottom-right aligned, as in FwdParams).
  const int64_t shift = i + p.seqlen_k - p.seqlen_q;
  int64_t lo = 0;
  int64_t hi = static_cast<int64_t>(p.seqlen_k) - 1;
  if (p.window_right >= 0 && shift + p.window_right < hi) hi = shift + p.window_right;
  if (p.window_left >= 0 && shift - p.window_left > lo) lo = shift - p.window_left;

  const T* k_base = static_cast<const T*>(p.k) + (b * p.seqlen_k * p.heads_k + head_k) * d;
  const T* v_base = static_cast<const T*>(p.v) + (b * p.seqlen_k * p.heads_k + head_k) * dv;
  const int64_t k_row_stride = static_cast<int64_t>(p.heads_k) * d;
  const int64_t v_row_stride = static_cast<int64_t>(p.heads_k) * dv;

  // Pass 1: the row max.
  float m = -INFINITY;
  for (int64_t j = lo + warp; j <= hi; j += kNaiveWarps) {
    m = fmaxf(m, score(q_s, k_base + j * k_row_stride, d, p.softmax_scale, p.softcap, lane));
  }
  if (lane == 0) red_s[warp] = m;
  __syncthreads();
  float row_max = -INFINITY;
  for (int w = 0; w < kNaiveWarps; ++w) row_max = fmaxf(row_max, red_s[w]);
  __syncthreads();  // red_s is reused below

  // Pass 2: l = sum exp(s - max), o = sum exp(s - max) v.
  float l = 0.f;
  float o[kPerLane];
#pragma unroll
  for (int t = 0; t < kPerLane; ++t) o[t] = 0.f;
  if (row_max != -INFINITY) {
    for (int64_t j = lo + warp; j <= hi; j += kNaiveWarps) {
      const float pj = expf(score(q_s, k_base + j * k_row_stride, d, p.softmax_scale, p.softcap, lane) - row_max);
      l += pj;
      const T* v_row = v_base + j * v_row_stride;
#pragma unroll
      for (int t = 0; t < kPerLane; ++t) {
        const int c = lane + 32 * t;
        if (c < dv) o[t] += pj * to_float(v_row[c]);
      }
    }
  }
  if (lane == 0) red_s[warp] = l;
#pragma unroll
  for (int t = 0; t < kPerLane; ++t) {
    const int c = lane + 32 * t;
    if (c < dv) o_s[warp][c] = o[t];
  }
  __syncthreads();

  float row_sum = 0.f;
  for (int w = 0; w < kNaiveWarps; ++w) row_sum += red_s[w];
  const int64_t out_row = static_cast<int64_t>(r) * p.heads + head;
  for (int c = threadIdx.x; c < dv; c += blockDim.x) {
    float acc = 0.f;
    for (int w = 0; w < kNaiveWarps; ++w) acc += o_s[w][c];
    out_ref[out_row * dv + c] = row_sum > 0.f ? acc / row_sum : 0.f;
  }
  if (threadIdx.x == 0) lse_ref[out_row] = row_sum > 0.f ? row_max + logf(row_sum) : -INFINITY;
}

__device__ __forceinline__ uint64_t global_timer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void sleep_kernel(uint64_t ns) {
  const uint64_t start = global_timer_ns();
  while (global_timer_ns() - start < ns) {
    __nanosleep(1000);
  }
}

}  // namespace

cudaError_t gpu_sleep(double ms, cudaStream_t stream) {
  if (!(ms > 0)) return cudaSuccess;
  sleep_kernel<<<1, 1, 0, stream>>>(static_cast<uint64_t>(ms * 1e6));
  return cudaGetLastError();
}

cudaError_t fill_random(void* data, flash3::DType dtype, int64_t n, uint64_t seed, float stddev,
                        cudaStream_t stream) {
  switch (dtype) {
    case flash3::DType::kFloat16:
      return launch_fill<__half>(data, n, seed, stddev, stream);
    case flash3::DType::kBFloat16:
      return launch_fill<__nv_bfloat16>(data, n, seed, stddev, stream);
    case flash3::DType::kFloat32:
      return launch_fill<float>(data, n, seed, stddev, stream);
    case flash3::DType::kFloat8E4M3:
      return launch_fill<__nv_fp8_e4m3>(data, n, seed, stddev, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t naive_attention_rows(const NaiveProblem& p, const int32_t* row_batch, const int32_t* row_index,
                                 int32_t n_rows, float* out_ref, float* lse_ref, cudaStream_t stream) {
  if (n_rows <= 0 || p.heads <= 0) return cudaSuccess;
  if (p.head_dim <= 0 || p.head_dim > kNaiveMaxHeadDim || p.head_dim_v <= 0 || p.head_dim_v > kNaiveMaxHeadDim ||
      p.heads_k <= 0 || p.heads % p.heads_k != 0 || p.heads > 65535) {
    return cudaErrorInvalidValue;
  }
  const dim3 grid(static_cast<unsigned>(n_rows), static_cast<unsigned>(p.heads));
  switch (p.dtype) {
    case flash3::DType::kFloat16:
      naive_rows_kernel<__half><<<grid, kNaiveThreads, 0, stream>>>(p, row_batch, row_index, out_ref, lse_ref);
      break;
    case flash3::DType::kBFloat16:
      naive_rows_kernel<__nv_bfloat16>
          <<<grid, kNaiveThreads, 0, stream>>>(p, row_batch, row_index, out_ref, lse_ref);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace flash3_bench
