// FP8 forward planning: descale factors (per (batch, kv head) or per block) and the e4m3 KernelKey.
#include <string>

#include "dispatch/fwd_dispatch.hpp"

namespace flash3 {

namespace {

// is_q: q's rank-2 descale is per kv head, so query head h reads entry h / (num_heads / num_heads_k).
Fp8Descale descale_of(const TensorRef& t, bool is_q, const ProblemShape& shape) {
  Fp8Descale d{};
  d.head_group = 1;
  if (!t.defined()) return d;
  d.ptr = static_cast<const float*>(t.data);
  d.batch_stride = t.stride[0];
  d.head_stride = t.stride[1];
  if (t.rank == 3) {
    d.block_stride = t.stride[2];
  } else if (is_q) {
    d.head_group = shape.heads / shape.heads_k;
  }
  return d;
}

}  // namespace

void plan_fp8_forward(const ForwardArgs& args, const ProblemShape& shape, int arch, FwdPlan* plan) {
  FwdParams& p = plan->params;
  p.q_descale = descale_of(args.q_descale, true, shape);
  p.k_descale = descale_of(args.k_descale, false, shape);
  p.v_descale = descale_of(args.v_descale, false, shape);
  p.out_is_fp16 = args.out.dtype == DType::kFloat16 ? 1 : 0;
  // Compiled FP8 head dims (tools/kernel_manifest.py FP8_HEAD_DIMS): 64, 128, 256; smaller multiples of 16 round up.
  int32_t const d = shape.head_dim <= 64 ? 64 : shape.head_dim <= 128 ? 128 : 256;
  bool const local = args.options.causal || args.options.window_left >= 0 || args.options.window_right >= 0;
  plan->key = KernelKey{arch, Direction::kForward, DType::kFloat8E4M3, d, d, local, false};
}

}  // namespace flash3
