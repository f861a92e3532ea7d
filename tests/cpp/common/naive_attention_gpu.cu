// The naive GPU attention (see naive_attention_gpu.hpp). Deliberately simple: clarity over speed.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/naive_attention_gpu.hpp"

namespace flash3_test {

namespace {

constexpr int kThreads = 128;  // 4 warps
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 1024;          // keys whose scores sit in shared memory at a time
constexpr int kMaxColsPerThread = 4;  // head_dim_v <= kThreads * 4

// Where one sequence lives (host-computed from the ReferenceProblem).
struct SeqDesc {
  long long q_row0, k_row0;
  long long lse_base;  // lse index of (head 0, row 0); heads are lse_head_stride apart, rows 1 apart
  int sq, sk;
};

struct NaiveParams {
  const void* q;
  const void* k;
  const void* v;
  double* out;
  double* lse;
  const SeqDesc* seqs;
  long long lse_head_stride;
  int heads, heads_k, d, dv;
  int window_left, window_right;  // right already has causal folded in
  double scale, softcap;
};

__device__ inline float load(const __half* p, long long i) { return __half2float(p[i]); }
__device__ inline float load(const __nv_bfloat16* p, long long i) { return __bfloat162float(p[i]); }

// Round a float to the element type T (round to nearest even) and back.
template <class T>
__device__ inline float round_to_t(float x);
template <>
__device__ inline float round_to_t<__half>(float x) {
  return __half2float(__float2half_rn(x));
}
template <>
__device__ inline float round_to_t<__nv_bfloat16>(float x) {
  return __bfloat162float(__float2bfloat16_rn(x));
}

template <class Acc>
__device__ inline Acc warp_sum(Acc x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// Block-wide max or sum of one value per thread; every thread gets the result.
template <bool kMax>
__device__ double block_reduce(double x, double* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const double y = __shfl_xor_sync(0xffffffffu, x, offset);
    x = kMax ? fmax(x, y) : x + y;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  double r = scratch[0];
  for (int w = 1; w < kWarps; ++w) r = kMax ? fmax(r, scratch[w]) : r + scratch[w];
  __syncthreads();  // scratch is reused by the next reduction
  return r;
}

// Fills scores[0, n) with the final (scaled, softcapped, in low mode rounded) scores of keys j0 .. j0 + n - 1.
// One warp per key: lanes split the head dim, then a shuffle tree sums the partial products.
template <class T, bool kLow>
__device__ void compute_scores(const NaiveParams& prm, const float* q_row, const T* k_base, long long k_row_stride,
                               int j0, int n, double* scores) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int jj = warp; jj < n; jj += kWarps) {
    const T* kj = k_base + static_cast<long long>(j0 + jj) * k_row_stride;
    if constexpr (kLow) {
      float acc = 0.f;
      for (int c = lane; c < prm.d; c += 32) acc += q_row[c] * load(kj, c);
      acc = warp_sum(acc);
      if (lane == 0) {
        const float s = round_to_t<T>(acc);  // the matmul output tensor is in the input dtype
        const float scale = static_cast<float>(prm.scale), cap = static_cast<float>(prm.softcap);
        scores[jj] = cap > 0.f ? round_to_t<T>(cap * tanhf(s * scale / cap)) : s * scale;
      }
    } else {
      double acc = 0.0;
      // Products of two fp16/bf16 values are exact in fp32; the sum is carried in fp64.
      for (int c = lane; c < prm.d; c += 32) acc += static_cast<double>(q_row[c] * load(kj, c));
      acc = warp_sum(acc);
      if (lane == 0) {
        scores[jj] = prm.softcap > 0 ? prm.softcap * tanh(acc * prm.scale / prm.softcap) : acc * prm.scale;
      }
    }
  }
  __syncthreads();
}

template <class T, bool kLow>
__global__ void __launch_bounds__(kThreads) naive_attention_kernel(NaiveParams prm) {
  extern __shared__ double smem[];
  double* scores = smem;                                      // kChunk
  double* scratch = scores + kChunk;                          // kWarps
  float* q_row = reinterpret_cast<float*>(scratch + kWarps);  // d

  const int i = blockIdx.x, hq = blockIdx.y, b = blockIdx.z;
  const SeqDesc seq = prm.seqs[b];
  if (i >= seq.sq) return;  // rows past the used length stay untouched
  const int hkv = hq / (prm.heads / prm.heads_k);
  double* out_row = prm.out + ((seq.q_row0 + i) * prm.heads + hq) * prm.dv;
  const long long lse_at = seq.lse_base + hq * prm.lse_head_stride + i;

  // The visible key range, as in ReferenceProblem::key_range.
  const long long diag = static_cast<long long>(i) + seq.sk - seq.sq;
  long long lo = 0, hi = static_cast<long long>(seq.sk) - 1;
  if (prm.window_right >= 0) hi = min(hi, diag + prm.window_right);
  if (prm.window_left >= 0) lo = max(lo, diag - prm.window_left);
  if (lo > hi) {
    for (int c = threadIdx.x; c < prm.dv; c += kThreads) out_row[c] = 0.0;
    if (prm.lse && threadIdx.x == 0) prm.lse[lse_at] = -INFINITY;
    return;
  }

  const T* q = static_cast<const T*>(prm.q) + ((seq.q_row0 + i) * prm.heads + hq) * prm.d;
  for (int c = threadIdx.x; c < prm.d; c += kThreads) q_row[c] = load(q, c);
  __syncthreads();
  const long long k_row_stride = static_cast<long long>(prm.heads_k) * prm.d;
  const long long v_row_stride = static_cast<long long>(prm.heads_k) * prm.dv;
  const T* k_base = static_cast<const T*>(prm.k) + seq.k_row0 * k_row_stride + hkv * prm.d;
  const T* v_base = static_cast<const T*>(prm.v) + seq.k_row0 * v_row_stride + hkv * prm.dv;
  const int first = static_cast<int>(lo), last = static_cast<int>(hi);

  // Pass 1: the row max.
  double row_max = -INFINITY;
  for (int j0 = first; j0 <= last; j0 += kChunk) {
    const int n = min(kChunk, last - j0 + 1);
    compute_scores<T, kLow>(prm, q_row, k_base, k_row_stride, j0, n, scores);
    for (int jj = threadIdx.x; jj < n; jj += kThreads) row_max = fmax(row_max, scores[jj]);
    __syncthreads();
  }
  row_max = block_reduce<true>(row_max, scratch);

  // Pass 2: the normaliser (fp32 in low mode, like PyTorch's softmax on a float tensor).
  double partial = 0.0;
  float partial_f = 0.f;
  for (int j0 = first; j0 <= last; j0 += kChunk) {
    const int n = min(kChunk, last - j0 + 1);
    compute_scores<T, kLow>(prm, q_row, k_base, k_row_stride, j0, n, scores);
    for (int jj = threadIdx.x; jj < n; jj += kThreads) {
      if constexpr (kLow)
        partial_f += expf(static_cast<float>(scores[jj]) - static_cast<float>(row_max));
      else
        partial += exp(scores[jj] - row_max);
    }
    __syncthreads();
  }
  // In low mode the per-thread partials are fp32; combining 128 of them in fp64 and rounding once is within fp32
  // noise of any fp32 summation order.
  const double sum = kLow ? static_cast<double>(static_cast<float>(block_reduce<false>(partial_f, scratch)))
                          : block_reduce<false>(partial, scratch);

  // Pass 3: probabilities and P V; thread t owns output columns t, t + 128, ...
  double acc[kMaxColsPerThread] = {0.0, 0.0, 0.0, 0.0};
  float acc_f[kMaxColsPerThread] = {0.f, 0.f, 0.f, 0.f};
  for (int j0 = first; j0 <= last; j0 += kChunk) {
    const int n = min(kChunk, last - j0 + 1);
    compute_scores<T, kLow>(prm, q_row, k_base, k_row_stride, j0, n, scores);
    for (int jj = threadIdx.x; jj < n; jj += kThreads) {
      if constexpr (kLow) {
        const float e = expf(static_cast<float>(scores[jj]) - static_cast<float>(row_max));
        scores[jj] = round_to_t<T>(e / static_cast<float>(sum));
      } else {
        scores[jj] = exp(scores[jj] - row_max) / sum;
      }
    }
    __syncthreads();
    for (int jj = 0; jj < n; ++jj) {
      const T* vj = v_base + static_cast<long long>(j0 + jj) * v_row_stride;
      const double p = scores[jj];
#pragma unroll
      for (int u = 0; u < kMaxColsPerThread; ++u) {
        const int c = threadIdx.x + u * kThreads;
        if (c < prm.dv) {
          if constexpr (kLow)
            acc_f[u] += static_cast<float>(p) * load(vj, c);
          else
            acc[u] += p * static_cast<double>(load(vj, c));
        }
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int u = 0; u < kMaxColsPerThread; ++u) {
    const int c = threadIdx.x + u * kThreads;
    if (c < prm.dv) out_row[c] = kLow ? static_cast<double>(round_to_t<T>(acc_f[u])) : acc[u];
  }
  if (prm.lse && threadIdx.x == 0) {
    prm.lse[lse_at] =
        kLow ? static_cast<double>(static_cast<float>(row_max) + logf(static_cast<float>(sum))) : row_max + log(sum);
  }
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("naive_attention_forward: ") + what + ": " + cudaGetErrorName(err) + " (" +
                             cudaGetErrorString(err) + ")");
  }
}

template <class T, bool kLow>
void launch(const NaiveParams& prm, dim3 grid, size_t smem, cudaStream_t stream) {
  naive_attention_kernel<T, kLow><<<grid, kThreads, smem, stream>>>(prm);
}

}  // namespace

void naive_attention_forward(const flash3::ref::ReferenceProblem& p, flash3::ref::Precision precision, NaiveMode mode,
                             const void* q, const void* k, const void* v, double* out, double* lse,
                             cudaStream_t stream) {
  p.validate();
  if (p.dv() > kThreads * kMaxColsPerThread) throw std::invalid_argument("naive_attention_forward: head_dim_v > 512");
  std::vector<SeqDesc> seqs(static_cast<size_t>(p.batch));
  int max_sq = 0;
  for (int b = 0; b < p.batch; ++b) {
    const auto s = p.sequence(b);
    seqs[b].q_row0 = s.q_row0;
    seqs[b].k_row0 = s.k_row0;
    seqs[b].sq = s.sq;
    seqs[b].sk = s.sk;
    seqs[b].lse_base = p.lse_index(b, 0, 0);
    max_sq = std::max(max_sq, s.sq);
  }
  if (max_sq == 0) return;
  if (p.heads > 65535 || p.batch > 65535) throw std::invalid_argument("naive_attention_forward: grid too large");

  SeqDesc* d_seqs = nullptr;
  check(cudaMalloc(&d_seqs, seqs.size() * sizeof(SeqDesc)), "cudaMalloc");
  cudaError_t err = cudaMemcpy(d_seqs, seqs.data(), seqs.size() * sizeof(SeqDesc), cudaMemcpyHostToDevice);
  if (err == cudaSuccess) {
    NaiveParams prm{};
    prm.q = q;
    prm.k = k;
    prm.v = v;
    prm.out = out;
    prm.lse = lse;
    prm.seqs = d_seqs;
    prm.lse_head_stride = p.varlen_q() ? p.rows_q() : p.seqlen_q;
    prm.heads = p.heads;
    prm.heads_k = p.heads_k;
    prm.d = p.head_dim;
    prm.dv = p.dv();
    prm.window_left = p.left();
    prm.window_right = p.right();
    prm.scale = p.scale();
    prm.softcap = p.softcap;
    const dim3 grid(static_cast<unsigned>(max_sq), static_cast<unsigned>(p.heads), static_cast<unsigned>(p.batch));
    const size_t smem = (kChunk + kWarps) * sizeof(double) + p.head_dim * sizeof(float);
    const bool low = mode == NaiveMode::kLowPrecision;
    if (precision == flash3::ref::Precision::kFloat16) {
      low ? launch<__half, true>(prm, grid, smem, stream) : launch<__half, false>(prm, grid, smem, stream);
    } else {
      low ? launch<__nv_bfloat16, true>(prm, grid, smem, stream)
          : launch<__nv_bfloat16, false>(prm, grid, smem, stream);
    }
    err = cudaGetLastError();
    if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
  }
  cudaFree(d_seqs);
  check(err, "kernel");
}

}  // namespace flash3_test
