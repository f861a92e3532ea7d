// The registry of compiled kernels: one KernelKey per generated kernel file, looked up at run time.
// A key that is not compiled is a clear error (kNotSupported), never a silent fallback.
#pragma once

#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "flash3/types.hpp"
#include "kernels/common/bwd_params.hpp"
#include "kernels/common/fwd_params.hpp"

namespace flash3 {

enum class Direction : int32_t { kForward = 0, kBackward = 1 };

struct KernelKey {
  int32_t arch;  // SM version the kernel is compiled for (90 = sm_90a)
  Direction direction;
  DType dtype;
  int32_t head_dim;    // compiled (padded) head dim of q and k
  int32_t head_dim_v;  // compiled head dim of v and out
  bool local_mask;     // causal / sliding-window masking compiled in
  bool softcap;

  bool operator==(const KernelKey& o) const {
    return arch == o.arch && direction == o.direction && dtype == o.dtype && head_dim == o.head_dim &&
           head_dim_v == o.head_dim_v && local_mask == o.local_mask && softcap == o.softcap;
  }
  std::string to_string() const;
};

using FwdKernelFn = void (*)(const FwdParams&, cudaStream_t);
using BwdKernelFn = void (*)(const BwdParams&, cudaStream_t);

// Exactly one of run_forward / run_backward is set, matching key.direction.
struct KernelEntry {
  KernelKey key;
  FwdKernelFn run_forward;
  BwdKernelFn run_backward;
  const char* name;  // the generated file's stem, e.g. fwd_sm90_bf16_hd128_local
};

// Generated into the build tree by tools/generate_kernels.py (kernel_table.cpp).
const std::vector<KernelEntry>& compiled_kernels();

// The entry for `key`, or nullptr when it is not compiled into this build.
const KernelEntry* find_kernel(const KernelKey& key);

// The compiled head dims for the forward on `arch`: the smallest (d, dv) pair with d >= head_dim and dv >= head_dim_v
// among the manifest's sizes. Returns false when head_dim exceeds every compiled size.
bool round_up_head_dims(int32_t head_dim, int32_t head_dim_v, int32_t* padded_d, int32_t* padded_dv);

}  // namespace flash3
