#include "dispatch/bwd_dispatch.hpp"

#include <string>

#include "dispatch/fwd_dispatch.hpp"

namespace flash3 {

namespace {

constexpr int64_t kAlign = 256;
int64_t align_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

// The head dims the backward is built for (a subset of the forward's; see bwd_kernel_traits_sm90.hpp).
constexpr int32_t kMaxBackwardHeadDim = 256;

void padded_head_dims(const ProblemShape& shape, int32_t* d, int32_t* dv) {
  if (!round_up_head_dims(shape.head_dim, shape.head_dim_v, d, dv) || *d > kMaxBackwardHeadDim ||
      *dv > kMaxBackwardHeadDim) {
    throw Error(Status::kNotSupported, "flash3::backward: head_dim = " + std::to_string(shape.head_dim) +
                                           ", head_dim_v = " + std::to_string(shape.head_dim_v) +
                                           ": the backward kernels cover head dims up to " +
                                           std::to_string(kMaxBackwardHeadDim) + " so far");
  }
}

// Scratch rows per (batch, head) in batch mode, per head in varlen mode (see bwd_scratch_row()).
int64_t scratch_rows(const ProblemShape& shape) {
  if (shape.varlen) { return align_up(shape.total_q + int64_t(kBwdScratchRowPad) * (shape.batch + 1), kBwdScratchRowPad); }
  return align_up(shape.seqlen_q, kBwdScratchRowPad);
}

struct ScratchLayout {
  int64_t rows_total;  // over all (batch, head)
  int64_t dq_accum, lse_log2, dpsum, semaphore, bytes;  // byte offsets and total
};

ScratchLayout scratch_layout(const ProblemShape& shape, int32_t padded_d) {
  ScratchLayout s{};
  s.rows_total = scratch_rows(shape) * shape.heads * (shape.varlen ? 1 : shape.batch);
  s.dq_accum = 0;
  s.lse_log2 = align_up(s.dq_accum + s.rows_total * padded_d * int64_t(sizeof(float)), kAlign);
  s.dpsum = align_up(s.lse_log2 + s.rows_total * int64_t(sizeof(float)), kAlign);
  s.semaphore = align_up(s.dpsum + s.rows_total * int64_t(sizeof(float)), kAlign);
  // One semaphore per 64 scratch rows (the smallest backward kBlockM).
  s.bytes = align_up(s.semaphore + s.rows_total / 64 * int64_t(sizeof(int32_t)), kAlign);
  return s;
}

}  // namespace

int64_t backward_workspace_bytes(const BackwardArgs& args, const ProblemShape& shape) {
  (void)args;
  int32_t d = 0, dv = 0;
  padded_head_dims(shape, &d, &dv);
  if (shape.batch == 0) { return 0; }
  return scratch_layout(shape, d).bytes;
}

BwdPlan plan_backward(const BackwardArgs& args, const ProblemShape& shape, int arch, int num_sms) {
  // The forward part of the parameters (inputs, strides, scales, mask) is planned exactly as the forward's.
  ForwardArgs fwd;
  fwd.q = args.q;
  fwd.k = args.k;
  fwd.v = args.v;
  fwd.out = args.out;
  fwd.lse = args.lse;
  fwd.varlen = args.varlen;
  fwd.options = args.options;
  FwdPlan const fwd_plan = plan_forward(fwd, shape, arch, num_sms);

  BwdPlan plan{};
  BwdParams& p = plan.params;
  static_cast<FwdParams&>(p) = fwd_plan.params;
  p.tile_counter = nullptr;

  int const row = shape.varlen ? 0 : 1;
  auto batch_stride = [&](const TensorRef& t) { return shape.varlen ? int64_t(0) : t.stride[0]; };
  p.dout = args.dout.data;
  p.dq = args.dq.data;
  p.dk = args.dk.data;
  p.dv = args.dv.data;
  p.do_batch_stride = batch_stride(args.dout);
  p.do_row_stride = args.dout.stride[row];
  p.do_head_stride = args.dout.stride[row + 1];
  p.dq_batch_stride = batch_stride(args.dq);
  p.dq_row_stride = args.dq.stride[row];
  p.dq_head_stride = args.dq.stride[row + 1];
  p.dk_batch_stride = batch_stride(args.dk);
  p.dk_row_stride = args.dk.stride[row];
  p.dk_head_stride = args.dk.stride[row + 1];
  p.dv_batch_stride = batch_stride(args.dv);
  p.dv_row_stride = args.dv.stride[row];
  p.dv_head_stride = args.dv.stride[row + 1];

  int32_t d = 0, dv = 0;
  padded_head_dims(shape, &d, &dv);
  ScratchLayout const s = scratch_layout(shape, d);
  char* ws = static_cast<char*>(args.workspace);
  p.dq_accum = reinterpret_cast<float*>(ws + s.dq_accum);
  p.lse_log2 = reinterpret_cast<float*>(ws + s.lse_log2);
  p.dpsum = reinterpret_cast<float*>(ws + s.dpsum);
  p.dq_semaphore = reinterpret_cast<int32_t*>(ws + s.semaphore);
  p.scratch_rows = scratch_rows(shape);
  p.head_dim_rounded = d;
  p.deterministic = args.options.deterministic;

  plan.key = KernelKey{arch, Direction::kBackward, args.q.dtype, d, dv, fwd_plan.key.local_mask,
                       fwd_plan.key.softcap};
  return plan;
}

void run_backward(const BwdPlan& plan, cudaStream_t stream) {
  const KernelEntry* entry = find_kernel(plan.key);
  if (entry == nullptr) {
    throw Error(Status::kNotSupported, "flash3::backward: kernel " + plan.key.to_string() +
                                           " is not compiled into this build (see FLASH3_KERNELS; "
                                           "flash3::describe_kernels() lists what is)");
  }
  entry->run_backward(plan.params, stream);
}

}  // namespace flash3
