// The backward's pre- and postprocess: small memory-bound SIMT kernels around the main kernel, any architecture.
//
//   preprocess   per scratch row of every (batch, head): D = rowsum(dO * O) in fp32, lse_log2 = lse * log2(e),
//                and a zeroed dQ accumulator row. Rows that take no part (past the used length, inside the padding)
//                get D = 0 and lse_log2 = +inf, which makes their P, and with it their dS, exactly 0 in the main
//                kernel, so the main kernel never masks query rows.
// One warp per row; blocks of kPrepostRows rows per (batch, head). The postprocess (dQ = accumulator * scale in the
// input dtype) reads the accumulator in the main kernel's fragment order, so it lives beside that kernel
// (kernels/sm90/bwd_postprocess_sm90.hpp).
#pragma once

#include <cuda_runtime_api.h>

#include <cutlass/cutlass.h>

#include "kernels/common/bwd_params.hpp"
#include "kernels/common/seqlen_info.hpp"

namespace flash3 {

constexpr int kPrepostThreads = 256;
constexpr int kPrepostRows = 64;

// Rows of sequence `batch` that the scratch holds (the allocated length rounded up) and that dq has.
CUTLASS_DEVICE int bwd_allocated_q(BwdParams const& p, int batch) {
  return p.cu_seqlens_q != nullptr ? int(p.cu_seqlens_q[batch + 1] - p.cu_seqlens_q[batch]) : p.seqlen_q;
}

template <class Element>
__global__ void __launch_bounds__(kPrepostThreads) bwd_preprocess_kernel(BwdParams const p) {
  int const batch = blockIdx.z, head = blockIdx.y;
  SeqlenInfo const seq(p, batch);
  int const padded_rows = (bwd_allocated_q(p, batch) + kBwdScratchRowPad - 1) / kBwdScratchRowPad * kBwdScratchRowPad;
  int const lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int64_t const scratch_row = bwd_scratch_row(p, batch, head);
  bool const varlen = p.cu_seqlens_q != nullptr;
  auto const* out = static_cast<Element const*>(p.out) + (varlen ? 0 : batch * p.o_batch_stride) + head * p.o_head_stride;
  auto const* dout =
      static_cast<Element const*>(p.dout) + (varlen ? 0 : batch * p.do_batch_stride) + head * p.do_head_stride;
  float const* lse = p.lse + (varlen ? 0 : batch * p.lse_batch_stride) + head * p.lse_head_stride + seq.offset_q;
  int const row_end = min(padded_rows, int(blockIdx.x + 1) * kPrepostRows);
  for (int row = blockIdx.x * kPrepostRows + warp; row < row_end; row += kPrepostThreads / 32) {
    float d = 0.f;
    float lse_log2 = INFINITY;
    if (row < seq.seqlen_q) {
      int64_t const r = seq.offset_q + row;
      for (int c = lane; c < p.head_dim_v; c += 32) {
        d += float(out[r * p.o_row_stride + c]) * float(dout[r * p.do_row_stride + c]);
      }
      for (int offset = 16; offset > 0; offset /= 2) { d += __shfl_xor_sync(0xffffffff, d, offset); }
      float const l = lse[row];
      // A row that saw no key has lse = -inf and out = 0: +inf makes its P = 0 (not exp2(+inf)).
      lse_log2 = l == -INFINITY ? INFINITY : l * 1.4426950408889634f;
    }
    if (lane == 0) {
      p.lse_log2[scratch_row + row] = lse_log2;
      p.dpsum[scratch_row + row] = d;
    }
    float* acc = p.dq_accum + (scratch_row + row) * p.head_dim_rounded;
    for (int c = lane; c < p.head_dim_rounded; c += 32) { acc[c] = 0.f; }
  }
}

// Grid of the preprocess: enough row blocks for the longest (padded) sequence, per head and batch.
inline dim3 bwd_prepost_grid(BwdParams const& p) {
  int const max_rows = (p.seqlen_q + kBwdScratchRowPad - 1) / kBwdScratchRowPad * kBwdScratchRowPad;
  return dim3((max_rows + kPrepostRows - 1) / kPrepostRows, p.num_heads, p.batch);
}

}  // namespace flash3
