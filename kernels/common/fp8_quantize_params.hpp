// Parameters of the FP8 quantise (+ Hadamard) kernels (kernels/sm90/fp8_quantize_sm90.cuh); plain C++ so the host
// side can fill them.
#pragma once

#include <cstdint>

namespace flash3 {

enum class Fp8QuantMode : int { kPerBlock = 0, kPerTensorAmax = 1, kPerTensorApply = 2 };

struct Fp8QuantizeParams {
  const void* in;  // (b, s, h, d) fp16 or bf16, last dim contiguous
  int64_t in_batch_stride, in_row_stride, in_head_stride;
  void* out;  // (b, s, h, d) e4m3
  int64_t out_batch_stride, out_row_stride, out_head_stride;
  float* scale;    // kPerBlock: (b, h, num_blocks); per tensor: 1 value
  uint32_t* amax;  // per tensor: the global amax (float bits), zeroed before the first pass
  int32_t batch, seqlen, heads, num_blocks;
  int32_t block_rows;  // rows per scale: 64, 96, 128 or 192 (the FP8 kernel's tile rows)
  int32_t hadamard;  // 0 / 1
  uint64_t seed;
};

constexpr float kFp8E4M3Max = 448.f;

}  // namespace flash3
