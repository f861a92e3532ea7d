// flash3 FP8 (e4m3) forward: the pieces beyond flash3::forward with e4m3 inputs.
//
// 1. flash3::forward with q, k, v in float8_e4m3 runs the FP8 attention kernel directly (out bf16 or fp16, lse fp32).
//    Descale factors (ForwardArgs::q_descale, k_descale, v_descale; fp32, > 0, each optional = 1.0) undo the
//    quantisation, x_true = x_e4m3 * descale, in one of two shapes:
//      rank 2 (batch, num_heads_k)            FA3's per-(batch, kv head) factors (q's too are per kv head). Strides
//                                             of 0 give one factor per tensor.
//      rank 3 (batch, heads, num_blocks)      block quantisation: one factor per tile of rows; heads = num_heads for
//                                             q, num_heads_k for k and v; num_blocks = ceil(seqlen / block) with
//                                             block = fp8_block_shape(head_dim).block_m for q, .block_n for k and v.
//                                             Batch mode only (not varlen).
// 2. fp8_forward takes fp16/bf16 q, k, v and runs quantisation (per tensor or per block), optionally the random
//    Hadamard transform of q and k (incoherent processing), then the FP8 attention: the FA3 paper's low-precision
//    path, with each technique switchable for accuracy studies.
#pragma once

#include <cstdint>

#include "flash3/types.hpp"

namespace flash3 {

// Rows per block-quantisation scale of the FP8 kernel for a head dim (64..256): block_m query rows, block_n keys.
struct Fp8BlockShape {
  int32_t block_m;
  int32_t block_n;
};
Fp8BlockShape fp8_block_shape(int32_t head_dim);

struct Fp8Options {
  // One scale per (batch, head, block of rows) instead of one per tensor.
  bool block_quantization = true;
  // Multiply q and k by M = H diag(random signs) / sqrt(d) before quantising (d must be 64, 128 or 256).
  bool incoherent_processing = true;
  // Seed of the random signs; the same seed gives the same M.
  uint64_t seed = 0;
};

// q, k, v: (b, s, h, d) fp16 or bf16 (batch mode; d = dv in {64, 128, 256}); out (b, sq, h, d) of the same dtype;
// lse optional (b, h, sq) fp32. The workspace holds the quantised copies and their scales.
struct Fp8ForwardArgs {
  TensorRef q, k, v, out, lse;
  AttentionOptions options;  // causal / window / softmax_scale; softcap must be 0
  Fp8Options fp8;
  void* workspace = nullptr;  // >= fp8_forward_workspace_size(args) bytes of device memory, 256-byte aligned
  int64_t workspace_bytes = 0;
};

int64_t fp8_forward_workspace_size(const Fp8ForwardArgs& args);
void fp8_forward(const Fp8ForwardArgs& args);

}  // namespace flash3
