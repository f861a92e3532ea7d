// The hardware ceilings flash3-bench reports beside its results, measured in the same process on the same GPU:
// a bf16 GEMM (cuBLAS), an FP8 GEMM (cuBLASLt, e4m3) and a device-to-device copy. Random data throughout (a GEMM
// on zeros can run faster than on real data).
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "bench_common.hpp"

namespace flash3_bench {
namespace {

void check_cublas(cublasStatus_t s, const std::string& what) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  const char* name = cublasGetStatusString(s);
  throw BenchError(what + ": " + (name ? name : "unknown cuBLAS status") + " (" + std::to_string(static_cast<int>(s)) +
                   ")");
}

// RAII wrappers so every error path releases what it created.
struct CublasHandle {
  cublasHandle_t h = nullptr;
  CublasHandle() { check_cublas(cublasCreate(&h), "cublasCreate"); }
  ~CublasHandle() {
    if (h) cublasDestroy(h);
  }
};
struct LtHandle {
  cublasLtHandle_t h = nullptr;
  LtHandle() { check_cublas(cublasLtCreate(&h), "cublasLtCreate"); }
  ~LtHandle() {
    if (h) cublasLtDestroy(h);
  }
};
struct LtMatmulDesc {
  cublasLtMatmulDesc_t d = nullptr;
  ~LtMatmulDesc() {
    if (d) cublasLtMatmulDescDestroy(d);
  }
};
struct LtLayout {
  cublasLtMatrixLayout_t l = nullptr;
  ~LtLayout() {
    if (l) cublasLtMatrixLayoutDestroy(l);
  }
};
struct LtPreference {
  cublasLtMatmulPreference_t p = nullptr;
  ~LtPreference() {
    if (p) cublasLtMatmulPreferenceDestroy(p);
  }
};

Ceiling bf16_gemm(int n, int warmup, int iters, cudaStream_t stream) {
  Ceiling c;
  const int64_t elems = static_cast<int64_t>(n) * n;
  DeviceBuffer a(elems * 2, "bf16 GEMM A"), b(elems * 2, "bf16 GEMM B"), d(elems * 2, "bf16 GEMM C");
  check_cuda(fill_random(a.get(), flash3::DType::kBFloat16, elems, 101, 1.0f, stream), "fill GEMM A");
  check_cuda(fill_random(b.get(), flash3::DType::kBFloat16, elems, 102, 1.0f, stream), "fill GEMM B");
  CublasHandle handle;
  check_cublas(cublasSetStream(handle.h, stream), "cublasSetStream");
  const float alpha = 1.0f, beta = 0.0f;
  auto run = [&](int) {
    check_cublas(cublasGemmEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a.get(), CUDA_R_16BF, n, b.get(),
                              CUDA_R_16BF, n, &beta, d.get(), CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx (bf16)");
  };
  const Timing t = time_calls(run, {}, warmup, iters, stream);
  c.ok = true;
  c.ms = t.median_ms;
  c.value = 2.0 * n * static_cast<double>(n) * n / (t.median_ms * 1e-3) / 1e12;
  c.sm_clock_mhz = t.sm_clock_mhz;
  c.note = "cublasGemmEx bf16 x bf16 -> bf16, fp32 accumulate, " + std::to_string(n) + "^3";
  return c;
}

Ceiling fp8_gemm(int n, int warmup, int iters, cudaStream_t stream) {
  Ceiling c;
  const int64_t elems = static_cast<int64_t>(n) * n;
  DeviceBuffer a(elems, "FP8 GEMM A"), b(elems, "FP8 GEMM B"), d(elems * 2, "FP8 GEMM D");
  const size_t workspace_bytes = 32u << 20;  // cuBLASLt's recommendation for Hopper
  DeviceBuffer workspace(workspace_bytes, "cuBLASLt workspace");
  check_cuda(fill_random(a.get(), flash3::DType::kFloat8E4M3, elems, 201, 1.0f, stream), "fill FP8 A");
  check_cuda(fill_random(b.get(), flash3::DType::kFloat8E4M3, elems, 202, 1.0f, stream), "fill FP8 B");

  LtHandle handle;
  LtMatmulDesc desc;
  check_cublas(cublasLtMatmulDescCreate(&desc.d, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  // FP8 GEMMs need the "TN" form: A transposed, B not (column-major). No scale pointers: scales default to 1. Fast
  // accumulation stays off, as in torch._scaled_mm's default (the anchors' FP8 ceiling).
  const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
  check_cublas(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t)),
               "set TRANSA");
  check_cublas(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof(op_n)),
               "set TRANSB");
  LtLayout la, lb, lc;
  check_cublas(cublasLtMatrixLayoutCreate(&la.l, CUDA_R_8F_E4M3, n, n, n), "layout A (e4m3)");
  check_cublas(cublasLtMatrixLayoutCreate(&lb.l, CUDA_R_8F_E4M3, n, n, n), "layout B (e4m3)");
  check_cublas(cublasLtMatrixLayoutCreate(&lc.l, CUDA_R_16BF, n, n, n), "layout C/D (bf16)");
  LtPreference pref;
  check_cublas(cublasLtMatmulPreferenceCreate(&pref.p), "cublasLtMatmulPreferenceCreate");
  check_cublas(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &workspace_bytes, sizeof(workspace_bytes)),
               "set max workspace");
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  check_cublas(cublasLtMatmulAlgoGetHeuristic(handle.h, desc.d, la.l, lb.l, lc.l, lc.l, pref.p, 1, &heuristic, &found),
               "cublasLtMatmulAlgoGetHeuristic (e4m3)");
  if (found < 1 || heuristic.state != CUBLAS_STATUS_SUCCESS) {
    throw BenchError("cublasLtMatmulAlgoGetHeuristic found no e4m3 algorithm for this GPU");
  }
  const float alpha = 1.0f, beta = 0.0f;
  auto run = [&](int) {
    check_cublas(cublasLtMatmul(handle.h, desc.d, &alpha, a.get(), la.l, b.get(), lb.l, &beta, d.get(), lc.l, d.get(),
                                lc.l, &heuristic.algo, workspace.get(), workspace_bytes, stream),
                 "cublasLtMatmul (e4m3)");
  };
  const Timing t = time_calls(run, {}, warmup, iters, stream);
  c.ok = true;
  c.ms = t.median_ms;
  c.value = 2.0 * n * static_cast<double>(n) * n / (t.median_ms * 1e-3) / 1e12;
  c.sm_clock_mhz = t.sm_clock_mhz;
  c.note = "cublasLtMatmul e4m3 x e4m3 -> bf16, fp32 accumulate, " + std::to_string(n) + "^3";
  return c;
}

Ceiling copy_bandwidth(int64_t bytes, int warmup, int iters, cudaStream_t stream) {
  Ceiling c;
  DeviceBuffer src(bytes, "copy source"), dst(bytes, "copy destination");
  check_cuda(fill_random(src.get(), flash3::DType::kFloat32, bytes / 4, 301, 1.0f, stream), "fill copy source");
  auto run = [&](int) {
    check_cuda(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync D2D");
  };
  const Timing t = time_calls(run, {}, warmup, iters, stream);
  c.ok = true;
  c.ms = t.median_ms;
  c.value = 2.0 * static_cast<double>(bytes) / (t.median_ms * 1e-3) / 1e9;  // GB/s, bytes read + written
  c.sm_clock_mhz = t.sm_clock_mhz;
  c.note = "cudaMemcpyAsync device to device, " + std::to_string(bytes >> 20) + " MiB, bytes read + written";
  return c;
}

template <typename F>
Ceiling guarded(const char* name, F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    (void)cudaGetLastError();  // do not let a failed ceiling poison the benchmark that follows
    Ceiling c;
    c.ok = false;
    c.note = std::string(name) + " failed: " + e.what();
    return c;
  }
}

}  // namespace

Ceilings measure_ceilings(int gemm_n, int64_t copy_bytes, int warmup, int iters, cudaStream_t stream) {
  Ceilings c;
  c.bf16_gemm = guarded("bf16 GEMM", [&] { return bf16_gemm(gemm_n, warmup, iters, stream); });
  c.fp8_gemm = guarded("FP8 GEMM", [&] { return fp8_gemm(gemm_n, warmup, iters, stream); });
  c.copy = guarded("device copy", [&] { return copy_bandwidth(copy_bytes, warmup, iters, stream); });
  return c;
}

}  // namespace flash3_bench
