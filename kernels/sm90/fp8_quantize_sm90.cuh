// Quantisation of fp16/bf16 Q, K, V to e4m3 for the FP8 forward, optionally with the random-sign Hadamard transform
// (incoherent processing, kernels/common/hadamard.hpp) fused in: one read of the input, one write of the output.
//
// One CTA per (row block, head, batch), 16 warps, each warp kRowsPerWarp consecutive rows of the block (the FP8
// kernel's tile rows: 16 * kRowsPerWarp). A lane holds 8 consecutive elements of a row (one 16-byte load, one 8-byte
// store), d / 8 lanes share a row and a warp covers 256 / d rows per load: 16-byte accesses at every d (the first
// version gave each lane d / 32 elements of every row: 4-byte loads at d = 64, 1.1 TB/s), and the Hadamard
// transform's cross-lane stages drop from 5 to log2(d / 8). Modes:
//   kPerBlock        amax over the block's rows -> descale = amax / 448 written to scale[(b * h + head) * nblk + blk],
//                    then the block is quantised with it: one pass.
//   kPerTensorAmax   first of two passes: the block's amax goes into a global atomicMax (float bits; amax >= 0 so the
//                    integer order is the float order).
//   kPerTensorApply  second pass: recomputes the (transformed) rows and quantises them with the global descale, which
//                    CTA (0, 0, 0) also writes to scale[0]. The second read of the input mostly hits L2.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include <cutlass/array.h>
#include <cutlass/numeric_types.h>

#include "kernels/common/fp8_quantize_params.hpp"
#include "kernels/common/hadamard.hpp"

namespace flash3 {

CUTLASS_DEVICE uint32_t fp8_quant_pack2(float lo, float hi) {
  uint16_t r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
  return r;
}

// Memory-bound: two CTAs (32 warps) per SM keep more loads in flight, where a thread's rows fit in the 64 registers
// that leaves (up to 32 values); more values per thread (d = 256 with 8+ rows per warp) get one CTA and 128.
template <int kD, int kRowsPerWarp>
constexpr int fp8_quantize_ctas_per_sm() { return kRowsPerWarp * kD / 32 <= 32 ? 2 : 1; }

template <class T, int kD, int kRowsPerWarp, Fp8QuantMode kMode>
__global__ void __launch_bounds__(512, fp8_quantize_ctas_per_sm<kD, kRowsPerWarp>())
    fp8_quantize_kernel(Fp8QuantizeParams p) {
  constexpr int kPerLane = 8;                        // one 16-byte load of fp16/bf16
  constexpr int kLanesPerRow = kD / kPerLane;        // 8, 16 or 32
  constexpr int kRowsPerLoad = 32 / kLanesPerRow;    // rows a warp covers per load: 4, 2 or 1
  constexpr int kLoads = kRowsPerWarp / kRowsPerLoad;
  constexpr int kWarps = 16;
  constexpr int kBlockRows = kWarps * kRowsPerWarp;
  static_assert(kD == 64 || kD == 128 || kD == 256);
  static_assert(kRowsPerWarp % kRowsPerLoad == 0, "a warp's rows must fill whole loads");
  __shared__ float warp_amax[kWarps];
  int const warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int const sub = lane % kLanesPerRow;  // this lane's 8 elements: sub * 8 .. sub * 8 + 7 of its row
  int const blk = blockIdx.x, head = blockIdx.y, b = blockIdx.z;
  // Load i of this lane reads row row0 + i * kRowsPerLoad.
  int const row0 = blk * kBlockRows + warp * kRowsPerWarp + lane / kLanesPerRow;

  float sign[kPerLane];
  CUTLASS_PRAGMA_UNROLL
  for (int j = 0; j < kPerLane; ++j) { sign[j] = p.hadamard ? hadamard_sign(p.seed, sub * kPerLane + j) : 1.f; }

  T const* in = static_cast<T const*>(p.in) + b * p.in_batch_stride + head * p.in_head_stride + sub * kPerLane;
  float x[kLoads][kPerLane];
  cutlass::AlignedArray<T, kPerLane> v[kLoads];
  // All loads first (kLoads x 16 bytes in flight per lane), then the math.
  CUTLASS_PRAGMA_UNROLL
  for (int i = 0; i < kLoads; ++i) {
    int const row = row0 + i * kRowsPerLoad;
    if (row < p.seqlen) {
      v[i] = *reinterpret_cast<cutlass::AlignedArray<T, kPerLane> const*>(in + int64_t(row) * p.in_row_stride);
    } else {
      v[i].fill(T(0.f));
    }
  }
  float amax = 0.f;
  CUTLASS_PRAGMA_UNROLL
  for (int i = 0; i < kLoads; ++i) {
    CUTLASS_PRAGMA_UNROLL
    for (int j = 0; j < kPerLane; ++j) { x[i][j] = float(v[i][j]) * sign[j]; }
    if (p.hadamard) { warp_hadamard<kPerLane, kLanesPerRow>(x[i], lane); }
    CUTLASS_PRAGMA_UNROLL
    for (int j = 0; j < kPerLane; ++j) { amax = fmaxf(amax, fabsf(x[i][j])); }
  }
  for (int m = 16; m > 0; m /= 2) { amax = fmaxf(amax, __shfl_xor_sync(0xffffffff, amax, m)); }
  if (lane == 0) { warp_amax[warp] = amax; }
  __syncthreads();
  float block_amax = 0.f;
  CUTLASS_PRAGMA_UNROLL
  for (int w = 0; w < kWarps; ++w) { block_amax = fmaxf(block_amax, warp_amax[w]); }

  if constexpr (kMode == Fp8QuantMode::kPerTensorAmax) {
    if (threadIdx.x == 0) { atomicMax(p.amax, __float_as_uint(block_amax)); }
    return;
  } else {
    float const scale_amax = kMode == Fp8QuantMode::kPerBlock ? block_amax : __uint_as_float(*p.amax);
    // An all-zero block keeps descale 1 (any value works; 0 would poison the kernel's descaling).
    float const descale = scale_amax > 0.f ? scale_amax / kFp8E4M3Max : 1.f;
    if (threadIdx.x == 0) {
      if constexpr (kMode == Fp8QuantMode::kPerBlock) {
        p.scale[(int64_t(b) * p.heads + head) * p.num_blocks + blk] = descale;
      } else {
        if (blk == 0 && head == 0 && b == 0) { p.scale[0] = descale; }
      }
    }
    float const inv = kFp8E4M3Max / (scale_amax > 0.f ? scale_amax : kFp8E4M3Max);
    uint8_t* out = static_cast<uint8_t*>(p.out) + b * p.out_batch_stride + head * p.out_head_stride + sub * kPerLane;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < kLoads; ++i) {
      int const row = row0 + i * kRowsPerLoad;
      if (row >= p.seqlen) { continue; }
      uint32_t packed[kPerLane / 2];
      CUTLASS_PRAGMA_UNROLL
      for (int j = 0; j < kPerLane / 2; ++j) { packed[j] = fp8_quant_pack2(x[i][2 * j] * inv, x[i][2 * j + 1] * inv); }
      *reinterpret_cast<uint2*>(out + int64_t(row) * p.out_row_stride) =
          make_uint2(packed[0] | (packed[1] << 16), packed[2] | (packed[3] << 16));
    }
  }
}

}  // namespace flash3
