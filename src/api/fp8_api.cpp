// flash3::fp8_forward: fp16/bf16 q, k, v -> (Hadamard) + quantise to e4m3 -> FP8 attention. Everything lives in the
// caller's workspace, so the call allocates nothing and can be captured in a CUDA graph.
#include <cuda_runtime_api.h>

#include <string>

#include "api/validate.hpp"
#include "dispatch/fwd_dispatch.hpp"
#include "flash3/flash3.hpp"
#include "flash3/fp8.hpp"
#include "fp8/fp8_quantize.hpp"
#include "kernels/common/fp8_quantize_params.hpp"
#include "kernels/sm90/fp8_tile_config.hpp"

namespace flash3 {

namespace {

constexpr int64_t kAlign = 256;
int64_t align_up(int64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

ForwardArgs as_forward_args(const Fp8ForwardArgs& a) {
  ForwardArgs f;
  f.q = a.q;
  f.k = a.k;
  f.v = a.v;
  f.out = a.out;
  f.lse = a.lse;
  f.options = a.options;
  return f;
}

// Byte offsets of the workspace regions.
struct Fp8Workspace {
  int64_t q8, k8, v8, q_scale, k_scale, v_scale, amax, counter, total;
  int64_t nblk_q, nblk_k;
};

Fp8Workspace layout_of(const Fp8ForwardArgs& a, const ProblemShape& s) {
  Fp8Workspace w{};
  int64_t const d = s.head_dim;
  Fp8BlockShape const blocks = fp8_block_shape(s.head_dim);
  w.nblk_q = ceil_div(s.seqlen_q, blocks.block_m);
  w.nblk_k = ceil_div(s.seqlen_k, blocks.block_n);
  bool const per_block = a.fp8.block_quantization;
  int64_t off = 0;
  auto take = [&](int64_t bytes) {
    int64_t const at = off;
    off += align_up(bytes);
    return at;
  };
  w.q8 = take(s.total_q * s.heads * d);
  w.k8 = take(s.total_k * s.heads_k * d);
  w.v8 = take(s.total_k * s.heads_k * d);
  w.q_scale = take(4 * (per_block ? int64_t(s.batch) * s.heads * w.nblk_q : 1));
  w.k_scale = take(4 * (per_block ? int64_t(s.batch) * s.heads_k * w.nblk_k : 1));
  w.v_scale = take(4 * (per_block ? int64_t(s.batch) * s.heads_k * w.nblk_k : 1));
  w.amax = take(3 * 4);
  w.counter = take(forward_workspace_required_bytes(a.options));
  w.total = off;
  return w;
}

void check_fp8_args(const Fp8ForwardArgs& a) {
  const char* where = "flash3::fp8_forward";
  validate_forward(as_forward_args(a), 0);  // shapes, dtypes (fp16/bf16), strides, options, device
  ProblemShape const s = forward_problem_shape(as_forward_args(a));
  if (s.head_dim != s.head_dim_v || (s.head_dim != 64 && s.head_dim != 128 && s.head_dim != 256))
    throw Error(Status::kNotSupported, std::string(where) + ": head_dim = " + std::to_string(s.head_dim) +
                                           ", head_dim_v = " + std::to_string(s.head_dim_v) +
                                           ": the quantise step supports head_dim == head_dim_v in {64, 128, 256}");
  if (a.options.softcap > 0.f)
    throw Error(Status::kNotSupported, std::string(where) + ": options.softcap: FP8 forward has no softcap kernels");
  Fp8BlockShape const b = fp8_block_shape(s.head_dim);
  for (int rows : {b.block_m, b.block_n})
    if (rows != 64 && rows != 96 && rows != 128 && rows != 192)
      throw Error(Status::kInternalError, std::string(where) + ": no quantiser for blocks of " + std::to_string(rows) +
                                              " rows");
}

}  // namespace

int64_t fp8_forward_workspace_size(const Fp8ForwardArgs& args) {
  check_fp8_args(args);
  return layout_of(args, forward_problem_shape(as_forward_args(args))).total;
}

void fp8_forward(const Fp8ForwardArgs& args) {
  check_fp8_args(args);
  ProblemShape const s = forward_problem_shape(as_forward_args(args));
  Fp8Workspace const w = layout_of(args, s);
  if (args.workspace_bytes < w.total || (w.total > 0 && args.workspace == nullptr))
    throw Error(Status::kInvalidArgument, "flash3::fp8_forward: workspace_bytes = " +
                                              std::to_string(args.workspace_bytes) + " but this call needs " +
                                              std::to_string(w.total) + " (ask fp8_forward_workspace_size())");
  if (reinterpret_cast<std::uintptr_t>(args.workspace) % kAlign != 0)
    throw Error(Status::kInvalidArgument, "flash3::fp8_forward: workspace is not 256-byte aligned");
  if (s.no_queries() || s.batch == 0) return;
  auto* ws = static_cast<char*>(args.workspace);
  auto* stream = static_cast<cudaStream_t>(args.options.stream);
  bool const per_block = args.fp8.block_quantization;
  int64_t const d = s.head_dim;

  // Quantise q (h heads), k and v (hk heads) into contiguous (b, s, heads, d) e4m3 copies.
  Fp8BlockShape const blocks = fp8_block_shape(s.head_dim);
  auto quantize = [&](const TensorRef& in, int64_t out_off, int64_t scale_off, int amax_idx, int heads, int seqlen,
                      int nblk, int block_rows, bool hadamard) {
    Fp8QuantizeParams p{};
    p.in = in.data;
    p.in_batch_stride = in.stride[0];
    p.in_row_stride = in.stride[1];
    p.in_head_stride = in.stride[2];
    p.out = ws + out_off;
    p.out_row_stride = int64_t(heads) * d;
    p.out_batch_stride = int64_t(seqlen) * heads * d;
    p.out_head_stride = d;
    p.scale = reinterpret_cast<float*>(ws + scale_off);
    p.amax = reinterpret_cast<uint32_t*>(ws + w.amax) + amax_idx;
    p.batch = s.batch;
    p.seqlen = seqlen;
    p.heads = heads;
    p.num_blocks = nblk;
    p.block_rows = block_rows;
    p.hadamard = hadamard ? 1 : 0;
    p.seed = args.fp8.seed;
    launch_fp8_quantize(p, in.dtype, int(d), per_block, stream);
  };
  bool const had = args.fp8.incoherent_processing;
  quantize(args.q, w.q8, w.q_scale, 0, s.heads, s.seqlen_q, int(w.nblk_q), blocks.block_m, had);
  if (s.seqlen_k > 0) {
    quantize(args.k, w.k8, w.k_scale, 1, s.heads_k, s.seqlen_k, int(w.nblk_k), blocks.block_n, had);
    quantize(args.v, w.v8, w.v_scale, 2, s.heads_k, s.seqlen_k, int(w.nblk_k), blocks.block_n, false);
  }

  ForwardArgs f = as_forward_args(args);
  f.q = make_tensor(ws + w.q8, DType::kFloat8E4M3, {s.batch, s.seqlen_q, s.heads, d});
  f.k = make_tensor(s.seqlen_k > 0 ? ws + w.k8 : nullptr, DType::kFloat8E4M3, {s.batch, s.seqlen_k, s.heads_k, d});
  f.v = make_tensor(s.seqlen_k > 0 ? ws + w.v8 : nullptr, DType::kFloat8E4M3, {s.batch, s.seqlen_k, s.heads_k, d});
  auto scale_tensor = [&](int64_t off, int heads, int64_t nblk) {
    float* ptr = reinterpret_cast<float*>(ws + off);
    if (per_block) return make_tensor(ptr, DType::kFloat32, {s.batch, heads, nblk});
    return make_tensor(ptr, DType::kFloat32, {s.batch, s.heads_k}, {0, 0});  // one factor for the tensor
  };
  f.q_descale = scale_tensor(w.q_scale, s.heads, w.nblk_q);
  if (s.seqlen_k > 0) {
    f.k_descale = scale_tensor(w.k_scale, s.heads_k, w.nblk_k);
    f.v_descale = scale_tensor(w.v_scale, s.heads_k, w.nblk_k);
  }
  f.workspace = forward_workspace_required_bytes(args.options) > 0 ? ws + w.counter : nullptr;
  f.workspace_bytes = forward_workspace_required_bytes(args.options);
  forward(f);
}

}  // namespace flash3
