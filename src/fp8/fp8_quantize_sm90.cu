// Launchers of the FP8 quantise (+ Hadamard) kernels (kernels/sm90/fp8_quantize_sm90.cuh). Built for sm_90a with the
// attention kernels (the e4m3 conversion needs sm_89+).
#include "fp8/fp8_quantize.hpp"

#include <string>

#include "kernels/sm90/fp8_quantize_sm90.cuh"

namespace flash3 {

namespace {

template <class T, int kD, int kRowsPerWarp, int kSplit, Fp8QuantMode kMode>
cudaError_t launch_mode(const Fp8QuantizeParams& p, cudaStream_t stream) {
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(unsigned(p.num_blocks) * kSplit, unsigned(p.heads), unsigned(p.batch));
  config.blockDim = dim3(512, 1, 1);
  config.stream = stream;
  cudaLaunchAttribute cluster{};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = kSplit;
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  config.attrs = &cluster;
  config.numAttrs = kSplit > 1 ? 1 : 0;
  return cudaLaunchKernelEx(&config, fp8_quantize_kernel<T, kD, kRowsPerWarp, kSplit, kMode>, p);
}

// kBlockRows rows per scale: 16 warps x kBlockRows / 16 rows, split over kSplit CTAs (fp8_quantize_split).
template <class T, int kD, int kBlockRows>
cudaError_t launch_rows(const Fp8QuantizeParams& p, bool per_block, cudaStream_t stream) {
  constexpr int kSplit = fp8_quantize_split<kD, kBlockRows>();
  constexpr int kRowsPerWarp = kBlockRows / 16 / kSplit;
  static_assert(kRowsPerWarp * 16 * kSplit == kBlockRows, "the block must split evenly over the cluster");
  if (per_block) { return launch_mode<T, kD, kRowsPerWarp, kSplit, Fp8QuantMode::kPerBlock>(p, stream); }
  cudaError_t err = cudaMemsetAsync(p.amax, 0, sizeof(uint32_t), stream);
  if (err != cudaSuccess) { return err; }
  err = launch_mode<T, kD, kRowsPerWarp, kSplit, Fp8QuantMode::kPerTensorAmax>(p, stream);
  if (err != cudaSuccess) { return err; }
  return launch_mode<T, kD, kRowsPerWarp, kSplit, Fp8QuantMode::kPerTensorApply>(p, stream);
}

// Rows per scale = the FP8 kernel's tile rows.
template <class T, int kD>
cudaError_t launch_d(const Fp8QuantizeParams& p, bool per_block, cudaStream_t stream) {
  switch (p.block_rows) {
    case 64: return launch_rows<T, kD, 64>(p, per_block, stream);
    case 96:  // 6 rows per warp: whole 16-byte loads only where a load covers 1 or 2 rows (d >= 128)
      if constexpr (kD >= 128) { return launch_rows<T, kD, 96>(p, per_block, stream); }
      return cudaErrorInvalidValue;
    case 128: return launch_rows<T, kD, 128>(p, per_block, stream);
    case 192: return launch_rows<T, kD, 192>(p, per_block, stream);
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
