// Forward dispatch: validated API arguments -> FwdParams + the KernelKey of the kernel that runs them.
#pragma once

#include "api/validate.hpp"
#include "dispatch/kernel_registry.hpp"
#include "flash3/types.hpp"
#include "kernels/common/fwd_params.hpp"

namespace flash3 {

struct FwdPlan {
  FwdParams params;
  KernelKey key;
};

// Fills the flat kernel parameters (strides, sizes, mask, scales) of validated arguments for a GPU with
// `num_sms` multiprocessors running SM version `arch`. Throws kNotSupported when no compiled size covers the head dims.
FwdPlan plan_forward(const ForwardArgs& args, const ProblemShape& shape, int arch, int num_sms);

// The FP8 part of plan_forward (q in e4m3): descale pointers and strides, output dtype, and the FP8 KernelKey.
// Called by plan_forward after the common fields are filled.
void plan_fp8_forward(const ForwardArgs& args, const ProblemShape& shape, int arch, FwdPlan* plan);

// Device scratch the forward needs: a tile counter for the dynamic scheduler of masked (causal/local) kernels.
int64_t forward_workspace_bytes(const AttentionOptions& options);

// Runs a plan on `stream`; throws kNotSupported (naming the missing variant) when its kernel is not in this build.
void run_forward(const FwdPlan& plan, cudaStream_t stream);

}  // namespace flash3
