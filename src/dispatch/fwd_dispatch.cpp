#include "dispatch/fwd_dispatch.hpp"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/sm90/tile_config.hpp"

namespace flash3 {

namespace {
bool has_local_mask(const AttentionOptions& o) { return o.causal || o.window_left >= 0 || o.window_right >= 0; }

FwdSoftmaxChoice choice_from_environment() {
  char const* v = std::getenv("FLASH3_FWD_SOFTMAX");
  if (v == nullptr) { return FwdSoftmaxChoice::kAuto; }
  if (std::strcmp(v, "exact") == 0) { return FwdSoftmaxChoice::kExact; }
  if (std::strcmp(v, "fixed") == 0) { return FwdSoftmaxChoice::kFixedOffset; }
  return FwdSoftmaxChoice::kAuto;
}
std::atomic<int>& softmax_choice() {
  static std::atomic<int> choice{int(choice_from_environment())};
  return choice;
}
}  // namespace

void set_forward_softmax_choice(FwdSoftmaxChoice choice) { softmax_choice().store(int(choice)); }
FwdSoftmaxChoice forward_softmax_choice() { return FwdSoftmaxChoice(softmax_choice().load(std::memory_order_relaxed)); }

bool forward_uses_fixed_offsets(const FwdParams& p) {
  if (p.repair == nullptr) { return false; }
  switch (forward_softmax_choice()) {
    case FwdSoftmaxChoice::kExact: return false;
    case FwdSoftmaxChoice::kFixedOffset: return true;
    case FwdSoftmaxChoice::kAuto: break;
  }
  int64_t const m_blocks = (int64_t(p.seqlen_q) + 127) / 128;
  int64_t const n_blocks = (int64_t(p.seqlen_k) + 127) / 128;
  int64_t const trips = m_blocks * p.num_heads * p.batch * n_blocks;
  return n_blocks >= kFwdFixedOffsetMinKeyBlocks && trips >= int64_t(kFwdFixedOffsetMinTripsPerSm) * p.num_sms;
}

int64_t forward_workspace_bytes(const AttentionOptions&) { return 256; }

int64_t forward_workspace_required_bytes(const AttentionOptions& options) {
  return has_local_mask(options) ? 256 : 0;  // one int, padded to an allocation granule
}

FwdPlan plan_forward(const ForwardArgs& args, const ProblemShape& shape, int arch, int num_sms) {
  FwdPlan plan{};
  FwdParams& p = plan.params;
  const AttentionOptions& o = args.options;
  p.q = args.q.data;
  p.k = args.k.data;
  p.v = args.v.data;
  p.out = args.out.data;
  p.lse = args.lse.defined() ? static_cast<float*>(args.lse.data) : nullptr;

  // Batch mode: (b, s, h, d) -> strides [0], [1], [2]. Varlen: (total, h, d) -> rows [0], heads [1], no batch.
  int const row = shape.varlen ? 0 : 1;
  auto batch_stride = [&](const TensorRef& t) { return shape.varlen ? int64_t(0) : t.stride[0]; };
  p.q_batch_stride = batch_stride(args.q);
  p.k_batch_stride = batch_stride(args.k);
  p.v_batch_stride = batch_stride(args.v);
  p.o_batch_stride = batch_stride(args.out);
  p.q_row_stride = args.q.stride[row];
  p.k_row_stride = args.k.stride[row];
  p.v_row_stride = args.v.stride[row];
  p.o_row_stride = args.out.stride[row];
  p.q_head_stride = args.q.stride[row + 1];
  p.k_head_stride = args.k.stride[row + 1];
  p.v_head_stride = args.v.stride[row + 1];
  p.o_head_stride = args.out.stride[row + 1];
  if (p.lse != nullptr) {
    // lse: (b, h, sq) or varlen (h, total_q); rows contiguous.
    p.lse_batch_stride = shape.varlen ? 0 : args.lse.stride[0];
    p.lse_head_stride = shape.varlen ? args.lse.stride[0] : args.lse.stride[1];
  }

  p.batch = shape.batch;
  p.seqlen_q = shape.seqlen_q;
  p.seqlen_k = shape.seqlen_k;
  p.num_heads = shape.heads;
  p.num_heads_k = shape.heads_k;
  p.head_dim = shape.head_dim;
  p.head_dim_v = shape.head_dim_v;
  p.total_q = shape.total_q;
  p.total_k = shape.total_k;
  p.cu_seqlens_q = args.varlen.cu_seqlens_q;
  p.cu_seqlens_k = args.varlen.cu_seqlens_k;
  p.seqused_q = args.varlen.seqused_q;
  p.seqused_k = args.varlen.seqused_k;

  float const scale = o.softmax_scale > 0.f ? o.softmax_scale : 1.f / std::sqrt(float(shape.head_dim));
  constexpr float kLog2e = 1.4426950408889634f;
  p.softmax_scale = scale;
  p.softcap = o.softcap;
  if (o.softcap > 0.f) {
    p.softcap_inv_scaled = scale / o.softcap;
    p.softmax_scale_log2 = o.softcap * kLog2e;
  } else {
    p.softcap_inv_scaled = 0.f;
    p.softmax_scale_log2 = scale * kLog2e;
  }
  // Causal is the window (left, 0).
  p.window_left = o.window_left;
  p.window_right = o.causal ? 0 : o.window_right;
  p.num_sms = num_sms;
  p.tile_counter = static_cast<int32_t*>(args.workspace);
  bool const has_repair_state =
      args.workspace != nullptr &&
      args.workspace_bytes >= kFwdRepairStateOffset + int64_t(sizeof(FwdRepairState));
  p.repair = has_repair_state
                 ? reinterpret_cast<FwdRepairState*>(static_cast<char*>(args.workspace) + kFwdRepairStateOffset)
                 : nullptr;
  p.softmax_mode = int32_t(FwdSoftmaxMode::kExact);  // fp16 / bf16: forward_uses_fixed_offsets, below

  int32_t padded_d = 0, padded_dv = 0;
  if (args.q.dtype == DType::kFloat8E4M3) {
    plan_fp8_forward(args, shape, arch, &plan);  // src/dispatch/fp8_dispatch.cpp
    return plan;
  }
  if (!round_up_head_dims(shape.head_dim, shape.head_dim_v, &padded_d, &padded_dv)) {
    throw Error(Status::kNotSupported, "flash3::forward: no kernel size covers head_dim = " +
                                           std::to_string(shape.head_dim) +
                                           ", head_dim_v = " + std::to_string(shape.head_dim_v));
  }
  bool const local = has_local_mask(o);
  if (forward_uses_fixed_offsets(p)) { p.softmax_mode = int32_t(FwdSoftmaxMode::kFixedOffset); }
  plan.key = KernelKey{arch, Direction::kForward, args.q.dtype, padded_d, padded_dv, local, o.softcap > 0.f};
  return plan;
}

void run_forward(const FwdPlan& plan, cudaStream_t stream) {
  const KernelEntry* entry = find_kernel(plan.key);
  if (entry == nullptr) {
    throw Error(Status::kNotSupported, "flash3::forward: kernel " + plan.key.to_string() +
                                           " is not compiled into this build (see FLASH3_KERNELS; "
                                           "flash3::describe_kernels() lists what is)");
  }
  entry->run_forward(plan.params, stream);
}

}  // namespace flash3
