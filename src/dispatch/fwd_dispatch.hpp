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

// Device scratch the forward asks for (forward_workspace_size): a tile counter for the dynamic scheduler of masked
// (causal / local) kernels at byte 0, and the fixed-offset softmax's repair state (FwdRepairState) at
// kFwdRepairStateOffset. 256 bytes for every call.
int64_t forward_workspace_bytes(const AttentionOptions& options);
// What the forward cannot run without: the tile counter of masked calls (256 bytes), nothing otherwise. A caller
// giving less than forward_workspace_bytes (a C ABI caller from before the repair state) gets the exact softmax.
int64_t forward_workspace_required_bytes(const AttentionOptions& options);

// Which softmax the fp16 / bf16 forward uses (FwdSoftmaxMode): kAuto takes the fixed offsets (with the repair launch)
// when the workspace holds the repair state and the call is big enough to pay for the second launch
// (forward_uses_fixed_offsets); kExact never; kFixedOffset whenever the workspace allows. Process-wide; starts from
// FLASH3_FWD_SOFTMAX=exact|fixed (unset: auto). Tests run both paths with it.
enum class FwdSoftmaxChoice { kAuto, kExact, kFixedOffset };
void set_forward_softmax_choice(FwdSoftmaxChoice choice);
FwdSoftmaxChoice forward_softmax_choice();
// kAuto's rule: at least kFwdFixedOffsetMinTripsPerSm key-block trips (of 128 x 128) per SM and
// kFwdFixedOffsetMinKeyBlocks key blocks (kernels/sm90/tile_config.hpp). Kernels without the fixed offsets compiled
// (hdim 256) run kExact whatever the plan says.
bool forward_uses_fixed_offsets(const FwdParams& p);

// Runs a plan on `stream`; throws kNotSupported (naming the missing variant) when its kernel is not in this build.
void run_forward(const FwdPlan& plan, cudaStream_t stream);

}  // namespace flash3
