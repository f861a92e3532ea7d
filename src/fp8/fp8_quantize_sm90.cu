// Launchers of the FP8 quantise (+ Hadamard) kernels (kernels/sm90/fp8_quantize_sm90.cuh). Built for sm_90a with the
// attention kernels (the e4m3 conversion needs sm_89+).
#include "fp8/fp8_quantize.hpp"

#include <string>

#include "kernels/sm90/fp8_quantize_sm90.cuh"

namespace flash3 {

namespace {

template <class T, int kD, int kRowsPerWarp>
cudaError_t launch_rows(const Fp8QuantizeParams& p, bool per_block, cudaStream_t stream) {
  dim3 const grid(p.num_blocks, p.heads, p.batch);
  if (per_block) {
    fp8_quantize_kernel<T, kD, kRowsPerWarp, Fp8QuantMode::kPerBlock><<<grid, 512, 0, stream>>>(p);
    return cudaGetLastError();
  }
  cudaError_t err = cudaMemsetAsync(p.amax, 0, sizeof(uint32_t), stream);
  if (err != cudaSuccess) { return err; }
  fp8_quantize_kernel<T, kD, kRowsPerWarp, Fp8QuantMode::kPerTensorAmax><<<grid, 512, 0, stream>>>(p);
  fp8_quantize_kernel<T, kD, kRowsPerWarp, Fp8QuantMode::kPerTensorApply><<<grid, 512, 0, stream>>>(p);
  return cudaGetLastError();
}

// Rows per scale = the FP8 kernel's tile rows (16 warps x kRowsPerWarp).
template <class T, int kD>
cudaError_t launch_d(const Fp8QuantizeParams& p, bool per_block, cudaStream_t stream) {
  switch (p.block_rows) {
    case 64: return launch_rows<T, kD, 4>(p, per_block, stream);
    case 96:  // 6 rows per warp: whole 16-byte loads only where a load covers 1 or 2 rows (d >= 128)
      if constexpr (kD >= 128) { return launch_rows<T, kD, 6>(p, per_block, stream); }
      return cudaErrorInvalidValue;
    case 128: return launch_rows<T, kD, 8>(p, per_block, stream);
    case 192: return launch_rows<T, kD, 12>(p, per_block, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <class T>
cudaError_t launch_t(const Fp8QuantizeParams& p, int head_dim, bool per_block, cudaStream_t stream) {
  switch (head_dim) {
    case 64: return launch_d<T, 64>(p, per_block, stream);
    case 128: return launch_d<T, 128>(p, per_block, stream);
    case 256: return launch_d<T, 256>(p, per_block, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

void launch_fp8_quantize(const Fp8QuantizeParams& p, DType in_dtype, int head_dim, bool per_block,
                         cudaStream_t stream) {
  if (p.batch == 0 || p.seqlen == 0 || p.heads == 0) { return; }
  cudaError_t const err = in_dtype == DType::kFloat16
                              ? launch_t<cutlass::half_t>(p, head_dim, per_block, stream)
                              : launch_t<cutlass::bfloat16_t>(p, head_dim, per_block, stream);
  if (err != cudaSuccess) {
    throw Error(Status::kCudaError, std::string("flash3::fp8_forward: quantize kernel launch failed: ") +
                                        cudaGetErrorString(err));
  }
}

}  // namespace flash3
