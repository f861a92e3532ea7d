// The flat parameter block every forward kernel is handed. Filled by src/dispatch from validated API arguments;
// kernels know nothing of the API structs. All strides in elements, 64-bit.
#pragma once

#include <cstdint>

namespace flash3 {

// An FP8 descale factor (fp32, > 0) per (batch, head, row block): the factor of (b, head, blk) is
// ptr[b * batch_stride + (head / head_group) * head_stride + blk * block_stride]; ptr == null means 1.
// FA3's per-(batch, kv head) descales: block_stride = 0 and, for q, head_group = num_heads / num_heads_k. Per-block
// (block quantisation): block_stride != 0, one factor per kernel tile of rows (kBlockM for q, kBlockN for k and v).
struct Fp8Descale {
  const float* ptr;
  int64_t batch_stride, head_stride, block_stride;
  int32_t head_group;
};

// How the fp16 / bf16 forward picks each row's softmax offset (kernels/common/softmax.hpp).
//   kExact:       the running row max; one launch. Small calls, callers without the workspace, FP8, hdim 256.
//   kFixedOffset: the first block's row max, fixed; a row that overflows sets FwdRepairState::needed, and the
//                 launcher follows with a kRepair launch of the same kernel.
//   kRepair:      exits at once unless `needed` is set; otherwise recomputes the whole call with kExact's softmax
//                 and clears `needed` (so a CUDA graph replaying the pair starts clean).
enum class FwdSoftmaxMode : int32_t { kExact = 0, kFixedOffset = 1, kRepair = 2 };

// In the forward workspace, after the dynamic walk's counter. Zeroed by nobody before a call: the kFixedOffset launch
// zeroes repair_tile_counter and ctas_seen (the kRepair launch runs after it in stream order); `needed` is cleared by
// the kRepair launch that consumed it. Garbage in `needed` (a fresh workspace) costs one needless repair, nothing else.
struct FwdRepairState {
  int32_t repair_tile_counter;  // the kRepair launch's dynamic walk counter
  uint32_t needed;              // set by any fixed-offset row that overflowed
  uint32_t ctas_seen;           // kRepair CTAs that have read `needed`; the last one clears it
};
// Byte offset of FwdRepairState in the forward workspace (the tile counter is at 0).
constexpr int64_t kFwdRepairStateOffset = 64;

struct FwdParams {
  const void* q;  // (b, sq, h, d) or varlen (tq, h, d)
  const void* k;  // (b, sk, hk, d) or varlen (tk, hk, d)
  const void* v;  // (b, sk, hk, dv) or varlen (tk, hk, dv)
  void* out;      // (b, sq, h, dv) or varlen (tq, h, dv)
  float* lse;     // (b, h, sq) or varlen (h, tq); may be null

  // Strides. In varlen mode the batch strides are unused (rows are addressed through cu_seqlens).
  int64_t q_batch_stride, q_row_stride, q_head_stride;
  int64_t k_batch_stride, k_row_stride, k_head_stride;
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  int64_t o_batch_stride, o_row_stride, o_head_stride;
  int64_t lse_batch_stride, lse_head_stride;  // lse rows are contiguous (stride 1)

  int32_t batch;
  int32_t seqlen_q, seqlen_k;  // batch mode: the padded lengths; varlen: max_seqlen_q / max_seqlen_k
  int32_t num_heads, num_heads_k;
  int32_t head_dim, head_dim_v;  // the real sizes; kernels compiled for a larger padded size mask the rest
  // Total rows of q/k in varlen mode (for TMA descriptor extents); batch * seqlen otherwise.
  int64_t total_q, total_k;

  const int32_t* cu_seqlens_q;  // varlen prefix sums or null
  const int32_t* cu_seqlens_k;
  const int32_t* seqused_q;  // optional actual lengths
  const int32_t* seqused_k;

  float softmax_scale;       // the scale on q k^T
  // Factor from the stored score to the exp2 argument: softmax_scale * log2(e); with softcap the stored score is
  // tanh(s * softmax_scale / softcap), so the factor is softcap * log2(e).
  float softmax_scale_log2;
  float softcap;             // 0 = off; else scores = softcap * tanh(s * softmax_scale / softcap)
  float softcap_inv_scaled;  // softmax_scale / softcap (the tanh argument's factor)

  // Mask: query row i (0-based, in its sequence) sees keys j with
  //   j <= i + (sk - sq) + window_right  (when window_right >= 0)
  //   j >= i + (sk - sq) - window_left   (when window_left >= 0)
  // causal is window_right = 0. Both -1: no mask beyond seqlen_k.
  int32_t window_left, window_right;

  int32_t num_sms;         // persistent grid size
  int32_t* tile_counter;   // dynamic scheduler counter in the workspace (zeroed by the launcher), or null
  int32_t softmax_mode;    // FwdSoftmaxMode (plan_forward's choice; the launcher keeps kExact where not compiled)
  FwdRepairState* repair;  // in the workspace, or null (no workspace: kExact only)

  // ---- FP8 (e4m3) forward only (kernels/sm90/fp8_*); ignored by the fp16/bf16 kernels ----
  Fp8Descale q_descale, k_descale, v_descale;
  int32_t out_is_fp16;  // output element type of the FP8 kernels: 0 = bf16, 1 = fp16
};

}  // namespace flash3
