// The flat parameter block of the backward kernels. Everything of the forward (inputs, strides, mask, scales) plus
// dout and the gradients, and the fp32 scratch the backward keeps in the workspace. All strides in elements, 64-bit.
#pragma once

#include <cstdint>

#include <cutlass/cutlass.h>

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

  // fp32 scratch in the workspace (carved by src/dispatch/bwd_dispatch.cpp). Rows are padded per (batch, head)
  // to whole blocks of kBwdScratchRowPad so no kernel bounds-checks them; bwd_scratch_row() finds a sequence's rows.
  float* dq_accum;        // dQ accumulator: scratch rows x head_dim_rounded
  float* lse_log2;        // lse * log2(e) per scratch row; +inf where the row takes no part (P = 0)
  float* dpsum;           // D = rowsum(dO * O) per scratch row; 0 where the row takes no part
  int32_t* dq_semaphore;  // deterministic mode: per query block of scratch rows, how many key blocks added so far
  int64_t scratch_rows;   // batch mode: rows per (batch, head); varlen: rows per head (all sequences)
  int32_t head_dim_rounded;  // the compiled head dim: the row length of dq_accum
  bool deterministic;     // dQ added in key-block order (bitwise reproducible)
};

constexpr int kBwdScratchRowPad = 128;  // every backward kBlockM divides it

// Scratch row of row 0 of (batch, head). Varlen: sequence b starts at (cu_seqlens_q[b] + 128 b) rounded down to a
// multiple of 128, which leaves each sequence its length rounded up to 128 rows before the next one starts.
CUTLASS_HOST_DEVICE int64_t bwd_scratch_row(BwdParams const& p, int batch, int head) {
  if (p.cu_seqlens_q != nullptr) {
    int64_t const start = int64_t(p.cu_seqlens_q[batch]) + int64_t(batch) * kBwdScratchRowPad;
    return int64_t(head) * p.scratch_rows + start / kBwdScratchRowPad * kBwdScratchRowPad;
  }
  return (int64_t(batch) * p.num_heads + head) * p.scratch_rows;
}

}  // namespace flash3
