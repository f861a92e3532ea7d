// Backward dispatch: validated API arguments -> BwdParams (with the workspace carved into fp32 scratch) + the
// KernelKey of the kernel that runs them.
#pragma once

#include "api/validate.hpp"
#include "dispatch/kernel_registry.hpp"
#include "flash3/types.hpp"
#include "kernels/common/bwd_params.hpp"

namespace flash3 {

struct BwdPlan {
  BwdParams params;
  KernelKey key;
};

// Device scratch of a validated backward: the fp32 dQ accumulator, lse_log2 and D rows, and the deterministic-mode
// semaphores, O(total query rows x head dim). Throws kNotSupported when no backward kernel size covers the head dims.
int64_t backward_workspace_bytes(const BackwardArgs& args, const ProblemShape& shape);

// Fills BwdParams for validated arguments whose workspace is at least backward_workspace_bytes.
BwdPlan plan_backward(const BackwardArgs& args, const ProblemShape& shape, int arch, int num_sms);

// Runs a plan on `stream`; throws kNotSupported (naming the missing variant) when its kernel is not in this build.
void run_backward(const BwdPlan& plan, cudaStream_t stream);

}  // namespace flash3
