// Host entry of the FP8 quantise (+ Hadamard) kernels; see kernels/sm90/fp8_quantize_sm90.cuh.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "flash3/types.hpp"
#include "kernels/common/fp8_quantize_params.hpp"

namespace flash3 {

// head_dim 64, 128 or 256; in_dtype fp16 or bf16. per_block: one scale per 128 rows of each (batch, head), else one
// per tensor (two passes; p.amax must point to 4 bytes of device scratch). Throws kCudaError on a failed launch.
void launch_fp8_quantize(const Fp8QuantizeParams& p, DType in_dtype, int head_dim, bool per_block,
                         cudaStream_t stream);

}  // namespace flash3
