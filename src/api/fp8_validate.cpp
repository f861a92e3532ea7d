// The FP8-only checks of flash3::forward (q in e4m3); called from validate_forward after the common checks.
#include <cstdint>
#include <sstream>
#include <string>

#include "api/validate.hpp"
#include "flash3/fp8.hpp"
#include "kernels/sm90/fp8_tile_config.hpp"

namespace flash3 {

namespace {

template <class... Parts>
[[noreturn]] void fail(Status status, const Parts&... parts) {
  std::ostringstream os;
  os << "flash3::forward: ";
  (os << ... << parts);
  throw Error(status, os.str());
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void check_descale(const TensorRef& t, const char* name, bool is_q, const ProblemShape& s) {
  if (!t.defined()) return;
  if (t.dtype != DType::kFloat32) fail(Status::kInvalidArgument, name, ".dtype = ", dtype_name(t.dtype), ", expected float32");
  const Fp8BlockShape blocks = fp8_block_shape(s.head_dim);
  const int64_t heads = is_q ? s.heads : s.heads_k;
  const int64_t nblk = is_q ? ceil_div(s.seqlen_q, blocks.block_m) : ceil_div(s.seqlen_k, blocks.block_n);
  if (t.rank == 2) {
    if (t.shape[0] != s.batch || t.shape[1] != s.heads_k)
      fail(Status::kInvalidArgument, name, ".shape = (", t.shape[0], ", ", t.shape[1], "), expected (batch, num_heads_k) = (",
           s.batch, ", ", s.heads_k, ")");
  } else if (t.rank == 3) {
    if (s.varlen)
      fail(Status::kNotSupported, name, " has rank 3 (per-block descales), which is offered in batch mode only, "
           "not with varlen.cu_seqlens");
    if (t.shape[0] != s.batch || t.shape[1] != heads || t.shape[2] != nblk)
      fail(Status::kInvalidArgument, name, ".shape = (", t.shape[0], ", ", t.shape[1], ", ", t.shape[2],
           "), expected (batch, ", is_q ? "num_heads" : "num_heads_k", ", ceil(", is_q ? "seqlen_q / " : "seqlen_k / ",
           is_q ? blocks.block_m : blocks.block_n, ")) = (", s.batch, ", ", heads, ", ", nblk,
           ") for per-block descales (see flash3::fp8_block_shape)");
  } else {
    fail(Status::kInvalidArgument, name, ".rank = ", t.rank, ", expected 2 (batch, num_heads_k) or 3 (batch, heads, ",
         "blocks)");
  }
  for (int i = 0; i < t.rank; ++i)
    if (t.stride[i] < 0) fail(Status::kInvalidArgument, name, ".stride[", i, "] = ", t.stride[i], " is negative");
  bool empty = false;
  for (int i = 0; i < t.rank; ++i) empty = empty || t.shape[i] == 0;
  if (!empty && t.data == nullptr) fail(Status::kInvalidArgument, name, ".data is null");
  if (reinterpret_cast<std::uintptr_t>(t.data) % 4 != 0)
    fail(Status::kInvalidArgument, name, ".data = ", t.data, " is not 4-byte aligned (fp32)");
}

}  // namespace

Fp8BlockShape fp8_block_shape(int32_t head_dim) {
  if (head_dim <= 0 || head_dim > 256)
    throw Error(Status::kInvalidArgument, "flash3::fp8_block_shape: head_dim = " + std::to_string(head_dim) +
                                              ", expected 1..256");
  const Fp8TileConfig c = fp8_tile_config_sm90(head_dim);
  return {c.block_m, c.block_n};
}

void validate_fp8_forward(const ForwardArgs& args, const ProblemShape& s) {
  if (s.head_dim != s.head_dim_v)
    fail(Status::kNotSupported, "FP8 forward needs head_dim_v == head_dim (got ", s.head_dim, " and ", s.head_dim_v, ")");
  if (s.head_dim % 16 != 0)
    fail(Status::kNotSupported, "q.shape[", s.varlen ? 2 : 3, "] (head_dim) = ", s.head_dim,
         ": FP8 forward needs a multiple of 16 (16-byte TMA rows of 1-byte elements)");
  if (args.options.softcap > 0.f) fail(Status::kNotSupported, "options.softcap: FP8 forward has no softcap kernels");
  check_descale(args.q_descale, "q_descale", true, s);
  check_descale(args.k_descale, "k_descale", false, s);
  check_descale(args.v_descale, "v_descale", false, s);
}

}  // namespace flash3
