// flash3: FlashAttention-3 for NVIDIA Hopper. The C++ entry points.
//
// Every entry point validates all arguments before touching the GPU and throws flash3::Error (with the argument's
// name and the expected value) on bad input; nothing is launched and no output is written in that case.
#pragma once

#include "flash3/types.hpp"
#include "flash3/version.hpp"

namespace flash3 {

// Bytes of device scratch to give forward(args) (256 today). Validates args like forward(). The workspace need not be
// zeroed, and one workspace serves any number of calls on one stream. Causal / local calls fail without it; the
// others run with less (an older caller's 0 bytes) but then take the exact-max softmax, which is slower.
int64_t forward_workspace_size(const ForwardArgs& args);
// Runs the forward pass on args.options.stream. Asynchronous with respect to the host.
void forward(const ForwardArgs& args);

int64_t backward_workspace_size(const BackwardArgs& args);
void backward(const BackwardArgs& args);

// Checks args without launching anything; throws flash3::Error exactly as forward() would. `arch` is the SM version
// (e.g. 90 for H100) to check against; 0 means the current device's (which requires a CUDA device).
void validate_forward(const ForwardArgs& args, int arch = 0);
void validate_backward(const BackwardArgs& args, int arch = 0);

// The compiled kernel variants, one line each (for docs and error messages).
std::string describe_kernels();

}  // namespace flash3
