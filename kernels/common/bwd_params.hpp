// The flat parameter block of the backward kernels. Everything of the forward (inputs, strides, mask, scales) plus
// dout and the gradients, and the fp32 scratch the backward keeps in the workspace. All strides in elements, 64-bit.
#pragma once

#include <cstdint>

#include "kernels/common/fwd_params.hpp"

namespace flash3 {

struct BwdParams : FwdParams {
  // FwdParams::out is the forward's output (read by the preprocess), lse its softmax_lse (required).
  const void* dout;  // like out
  void* dq;          // like q
  void* dk;          // like k
  void* dv;          // like v
  int64_t do_batch_stride, do_row_stride, do_head_stride;
  int64_t dq_batch_stride, dq_row_stride, dq_head_stride;
  int64_t dk_batch_stride, dk_row_stride, dk_head_stride;
  int64_t dv_batch_stride, dv_row_stride, dv_head_stride;

  // Workspace (carved by src/dispatch/bwd_dispatch.cpp). Per (batch, head) the scratch rows are padded to whole
  // tiles so no kernel needs a bounds check on it; see bwd_dispatch.cpp for the exact layout.
  float* dq_accum;     // fp32 dQ accumulator, (b, h, seqlen_q_rounded, head_dim_rounded)
  float* lse_log2;     // lse * log2(e), (b, h, seqlen_q_rounded); -inf rows become +inf (P = 0)
  float* dpsum;        // D = rowsum(dO * O), (b, h, seqlen_q_rounded)
  float* dk_accum;     // GQA only (h != hk): fp32 dK, (b, hk, seqlen_k_rounded, head_dim_rounded); else null
  float* dv_accum;     // GQA only: fp32 dV, (b, hk, seqlen_k_rounded, head_dim_v_rounded); else null
  int32_t* dq_semaphore;  // deterministic only: per (m block, b, h) ticket of the next n block to add into dQ
  int32_t* dkv_semaphore; // deterministic GQA only: per (n block, b, hk) ticket of the next q head to add

  int32_t seqlen_q_rounded, seqlen_k_rounded;  // varlen: total rows of the padded scratch (see bwd_dispatch.cpp)
  int32_t head_dim_rounded, head_dim_v_rounded;
  bool deterministic;
};

}  // namespace flash3
