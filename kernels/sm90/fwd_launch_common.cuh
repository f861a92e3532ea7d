// The launch both sm90 forward kernels (fp16/bf16 and FP8) share once their TMA descriptors are built: the
// persistent grid over HeadMajorTileOrder tiles, the shared-memory limit, the dynamic walk's counter, the launch.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "flash3/types.hpp"
#include "kernels/common/fwd_params.hpp"
#include "kernels/common/launch_helpers.hpp"
#include "kernels/sm90/tile_config.hpp"

namespace flash3 {

// `params` has its descriptors set; this fills params.order (and params.walk for masked kernels) and launches
// min(#tiles, #SMs) CTAs. `what` names the caller in a launch error. With params.fwd.softmax_mode = kFixedOffset it
// launches the kernel a second time in kRepair mode (which exits at once unless a row overflowed); that launch's
// walk counter is zeroed by the first launch (FwdRepairState), so it costs no memset.
template <class Traits, class Kernel>
void launch_persistent_forward(void (*kernel)(typename Kernel::Params), typename Kernel::Params& params,
                               FwdParams const& p, cudaStream_t stream, char const* what) {
  int const num_m_blocks = (p.seqlen_q + Traits::kBlockM - 1) / Traits::kBlockM;
  params.order = {num_m_blocks, p.num_heads, p.batch};
  int const num_tiles = params.order.num_tiles();
  if (num_tiles == 0) { return; }
  int const grid = num_tiles < p.num_sms ? num_tiles : p.num_sms;

  constexpr int kSmemBytes = Traits::kSharedStorageBytes;
  cudaError_t err = ensure_dynamic_smem<Kernel>(kernel, kSmemBytes);
  if constexpr (Traits::kHasLocal) {
    // The dynamic walk's counter lives in the caller's workspace (forward_workspace_size).
    if (err == cudaSuccess) {
      err = prepare_tile_counter(p.tile_counter, num_tiles, grid, stream, &params.walk.counter);
    }
  }
  if (err == cudaSuccess) {
    kernel<<<grid, Traits::kNumThreads, kSmemBytes, stream>>>(params);
    err = cudaGetLastError();
  }
  // FLASH3_FWD_EXP & 131072: DIAGNOSTIC, no repair launch (a check that the overflow tests can fail).
  if (err == cudaSuccess && params.fwd.softmax_mode == int32_t(FwdSoftmaxMode::kFixedOffset) &&
      (FLASH3_FWD_EXP & 131072) == 0) {
    params.fwd.softmax_mode = int32_t(FwdSoftmaxMode::kRepair);
    if constexpr (Traits::kHasLocal) {
      params.walk.counter = num_tiles > grid ? &params.fwd.repair->repair_tile_counter : nullptr;
    }
    kernel<<<grid, Traits::kNumThreads, kSmemBytes, stream>>>(params);
    err = cudaGetLastError();
  }
  if (err != cudaSuccess) {
    throw Error(Status::kCudaError, std::string(what) + ": kernel launch failed: " + cudaGetErrorString(err));
  }
}

}  // namespace flash3
