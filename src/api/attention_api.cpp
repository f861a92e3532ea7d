// The C++ entry points: validate (src/api/validate.cpp), plan (src/dispatch), launch. Nothing below re-validates.
#include <cuda_runtime_api.h>

#include <sstream>
#include <string>

#include "api/validate.hpp"
#include "dispatch/bwd_dispatch.hpp"
#include "dispatch/fwd_dispatch.hpp"
#include "flash3/flash3.hpp"

namespace flash3 {

int64_t forward_workspace_size(const ForwardArgs& args) {
  validate_forward(args, 0);
  return forward_workspace_bytes(args.options);
}

void forward(const ForwardArgs& args) {
  validate_forward(args, 0);
  ProblemShape const shape = forward_problem_shape(args);
  if (shape.no_queries() || shape.batch == 0) { return; }  // nothing to write
  int64_t const needed = forward_workspace_required_bytes(args.options);
  if (args.workspace_bytes < needed) {
    throw Error(Status::kInvalidArgument, "flash3::forward: workspace_bytes = " + std::to_string(args.workspace_bytes) +
                                              " but this call needs " + std::to_string(needed) +
                                              " bytes of device workspace (ask forward_workspace_size())");
  }
  DeviceInfo const device = current_device_info("flash3::forward");
  FwdPlan const plan = plan_forward(args, shape, device.arch, device.sm_count);
  run_forward(plan, static_cast<cudaStream_t>(args.options.stream));
}

int64_t backward_workspace_size(const BackwardArgs& args) {
  validate_backward(args, 0);
  return backward_workspace_bytes(args, backward_problem_shape(args));
}

void backward(const BackwardArgs& args) {
  validate_backward(args, 0);
  ProblemShape const shape = backward_problem_shape(args);
  if (shape.batch == 0) { return; }  // nothing to write
  int64_t const needed = backward_workspace_bytes(args, shape);
  if (args.workspace_bytes < needed) {
    throw Error(Status::kInvalidArgument, "flash3::backward: workspace_bytes = " +
                                              std::to_string(args.workspace_bytes) + " but this call needs " +
                                              std::to_string(needed) +
                                              " bytes of device workspace (ask backward_workspace_size())");
  }
  DeviceInfo const device = current_device_info("flash3::backward");
  BwdPlan const plan = plan_backward(args, shape, device.arch, device.sm_count);
  run_backward(plan, static_cast<cudaStream_t>(args.options.stream));
}

std::string describe_kernels() {
  std::ostringstream s;
  for (const KernelEntry& e : compiled_kernels()) { s << e.name << "\n"; }
  return s.str();
}

}  // namespace flash3
