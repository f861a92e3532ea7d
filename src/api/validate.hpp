// Argument validation shared by every entry point (C++ and C). validate_forward / validate_backward (declared in
// flash3/flash3.hpp) check everything that can be checked on the host, then the GPU architecture; they never read
// or write tensor data, so a failed call changes no output. This header adds what the entry points need on top:
// the canonical problem sizes of validated arguments and the device-architecture query.
#pragma once

#include <cstdint>

#include "flash3/flash3.hpp"

namespace flash3 {

// The problem sizes of validated arguments, in one place for both layouts.
//   batch mode: batch = q.shape[0], seqlen_q = q.shape[1], seqlen_k = k.shape[1],
//               total_q = batch * seqlen_q, total_k = batch * seqlen_k.
//   varlen:     batch = varlen.batch, seqlen_q / seqlen_k = varlen.max_seqlen_q / max_seqlen_k,
//               total_q = q.shape[0], total_k = k.shape[0] (rows of the packed tensors).
// batch, seqlen_q, seqlen_k and the totals may be 0. total_q == 0 means there is nothing to compute or write and the
// entry points return early without launching; total_q > 0 with seqlen_k == 0 (or total_k == 0) still has to write
// out = 0 and lse = -inf for every query row (a row that sees no key).
struct ProblemShape {
  int32_t batch = 0;
  int32_t seqlen_q = 0;
  int32_t seqlen_k = 0;
  int32_t heads = 0;
  int32_t heads_k = 0;
  int32_t head_dim = 0;
  int32_t head_dim_v = 0;
  bool varlen = false;
  int64_t total_q = 0;
  int64_t total_k = 0;

  bool no_queries() const { return total_q == 0; }
};

// Canonical sizes of arguments that passed validate_forward / validate_backward (not meaningful otherwise: call
// these after validation; they read shapes only and never throw).
ProblemShape forward_problem_shape(const ForwardArgs& args);
ProblemShape backward_problem_shape(const BackwardArgs& args);

// The FP8-only checks of a forward whose q is e4m3 and whose other arguments passed the common checks: head dims
// (64..256, multiples of 16, d == dv), no softcap, and the descale tensors (src/api/fp8_validate.cpp).
void validate_fp8_forward(const ForwardArgs& args, const ProblemShape& shape);

// SM version (10 * major + minor) of the current CUDA device. Throws Error(kNoDevice) when no CUDA device is present
// or usable, Error(kCudaError) when a later query fails. `where` prefixes the message (e.g. "flash3::forward").
// Resets the CUDA runtime's last error after a failed query (cudaGetLastError), so callers see no stale error from
// it; initialisation failures (no driver, no device) are reported by the runtime on every call regardless.
int current_device_arch(const char* where);

// The current device's SM version and SM count, with the same errors as current_device_arch. Both are fixed for a
// device's lifetime, so they are queried once per device and cached (every forward and backward call needs them).
struct DeviceInfo {
  int arch;
  int sm_count;
};
DeviceInfo current_device_info(const char* where);

// Whether flash3 has kernels for SM version `arch`: only sm_90 (Hopper; the kernels are sm_90a, which runs on
// compute capability 9.0 only).
bool arch_supported(int arch);

}  // namespace flash3
