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

#include <cutlass/array.h>
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

// kVectorized: O and dO rows read 16 bytes (8 elements) per lane, ceil(dv / 8) lanes per row rounded up to a power
// of two, so a warp covers 32 / that many rows at once, and the accumulator zeroed with 16-byte stores; taken when
// every O / dO row start is 16-byte aligned (bwd_preprocess_vectorizable). The scalar form (2-byte loads, one warp per
// row) is the fallback for views that are not. Measured on the H100 (perf-notes B10).
template <class Element, bool kVectorized>
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
  constexpr int kVec = kVectorized ? 8 : 1;  // elements per lane and load
  // Lanes per row: a power of two (the shuffle reduction stays inside aligned groups), all 32 in the scalar form.
  int lanes_per_row = 32;
  if constexpr (kVectorized) {
    lanes_per_row = 1;
    while (lanes_per_row < 32 && lanes_per_row * kVec < p.head_dim_v) { lanes_per_row *= 2; }
  }
  int const rows_per_warp = 32 / lanes_per_row;
  int const lane_in_row = lane % lanes_per_row;
  // The loop runs per warp (all lanes together, for the shuffles); lane group g of the warp takes row base + g.
  for (int base = blockIdx.x * kPrepostRows + warp * rows_per_warp; base < row_end;
       base += kPrepostThreads / 32 * rows_per_warp) {
    int const row = base + lane / lanes_per_row;
    bool const in_range = row < row_end;
    float d = 0.f;
    float lse_log2 = INFINITY;
    bool const used = in_range && row < seq.seqlen_q;
    if (used) {
      int64_t const r = seq.offset_q + row;
      for (int c = lane_in_row * kVec; c < p.head_dim_v; c += lanes_per_row * kVec) {
        if constexpr (kVectorized) {
          cutlass::AlignedArray<Element, kVec> const o =
              *reinterpret_cast<cutlass::AlignedArray<Element, kVec> const*>(out + r * p.o_row_stride + c);
          cutlass::AlignedArray<Element, kVec> const g =
              *reinterpret_cast<cutlass::AlignedArray<Element, kVec> const*>(dout + r * p.do_row_stride + c);
          CUTLASS_PRAGMA_UNROLL
          for (int i = 0; i < kVec; ++i) { d += float(o[i]) * float(g[i]); }
        } else {
          d += float(out[r * p.o_row_stride + c]) * float(dout[r * p.do_row_stride + c]);
        }
      }
      float const l = lse[row];
      // A row that saw no key has lse = -inf and out = 0: +inf makes its P = 0 (not exp2(+inf)).
      lse_log2 = l == -INFINITY ? INFINITY : l * 1.4426950408889634f;
    }
    for (int offset = lanes_per_row / 2; offset > 0; offset /= 2) { d += __shfl_xor_sync(0xffffffff, d, offset); }
    if (!in_range) { continue; }
    if (lane_in_row == 0) {
      p.lse_log2[scratch_row + row] = lse_log2;
      p.dpsum[scratch_row + row] = d;
    }
    float* acc = p.dq_accum + (scratch_row + row) * p.head_dim_rounded;
    if constexpr (kVectorized) {  // head_dim_rounded is a multiple of 4 (a compiled head dim)
      for (int c = lane_in_row * 4; c < p.head_dim_rounded; c += lanes_per_row * 4) {
        *reinterpret_cast<float4*>(acc + c) = make_float4(0.f, 0.f, 0.f, 0.f);
      }
    } else {
      for (int c = lane_in_row; c < p.head_dim_rounded; c += lanes_per_row) { acc[c] = 0.f; }
    }
  }
}

// Whether the vectorized preprocess may read O and dO: every row start 16-byte aligned.
template <class Element>
inline bool bwd_preprocess_vectorizable(BwdParams const& p) {
  constexpr int64_t kAlign = 16 / sizeof(Element);
  auto aligned = [&](void const* ptr, int64_t a, int64_t b, int64_t c) {
    return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && a % kAlign == 0 && b % kAlign == 0 && c % kAlign == 0;
  };
  return p.head_dim_v % kAlign == 0 && p.head_dim_rounded % 4 == 0 &&
         aligned(p.out, p.o_batch_stride, p.o_row_stride, p.o_head_stride) &&
         aligned(p.dout, p.do_batch_stride, p.do_row_stride, p.do_head_stride);
}

// Grid of the preprocess: enough row blocks for the longest (padded) sequence, per head and batch.
inline dim3 bwd_prepost_grid(BwdParams const& p) {
  int const max_rows = (p.seqlen_q + kBwdScratchRowPad - 1) / kBwdScratchRowPad * kBwdScratchRowPad;
  return dim3((max_rows + kPrepostRows - 1) / kPrepostRows, p.num_heads, p.batch);
}

}  // namespace flash3
