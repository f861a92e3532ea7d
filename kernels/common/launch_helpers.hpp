// Host-side pieces every launcher shares, kept off the per-call path where they can be: a call's host time is
// measured (a tiny problem is launch-bound), so work that only has to happen once per device is done once.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>

namespace flash3 {

// Raises a kernel's dynamic shared-memory limit to `bytes`, once per device: the attribute belongs to the function
// in the device's primary context and stays set, while cudaFuncSetAttribute itself takes a driver lock and costs a
// noticeable share of a small call. `KernelTag` is the kernel's own class (one flag set per kernel). A process that
// calls cudaDeviceReset loses the attribute; the next launch then fails with a clear CUDA error rather than running
// wrong.
template <class KernelTag, class KernelFn>
cudaError_t ensure_dynamic_smem(KernelFn kernel, int bytes) {
  static std::atomic<uint64_t> done_on_device{0};  // bit i: set on device i (ordinals >= 64 are set every call)
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) { return err; }
  uint64_t const bit = device < 64 ? (uint64_t(1) << device) : 0;
  if (bit != 0 && (done_on_device.load(std::memory_order_acquire) & bit) != 0) { return cudaSuccess; }
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (err == cudaSuccess && bit != 0) { done_on_device.fetch_or(bit, std::memory_order_release); }
  return err;
}

// The dynamic tile walk's counter for a launch of `grid` CTAs over `num_tiles` tiles: zeroed with a stream-ordered
// memset (capturable in a CUDA graph) when CTAs will draw indices, null (no memset) when each CTA has one tile.
inline cudaError_t prepare_tile_counter(int32_t* workspace_counter, int num_tiles, int grid, cudaStream_t stream,
                                        int32_t** counter) {
  if (num_tiles <= grid) {
    *counter = nullptr;
    return cudaSuccess;
  }
  *counter = workspace_counter;
  return cudaMemsetAsync(workspace_counter, 0, sizeof(int32_t), stream);
}

// Deterministic backward: the largest number of CTAs its dQ summation order may assume co-resident
// (kernels/common/bwd_query_order.hpp), from FLASH3_DETERMINISTIC_CHUNK_CTAS; 0 (unset) = what fits on the device.
// The order assumes the kernel can use every SM the device reports; a context limited to fewer (MPS with a reduced
// active-thread percentage, green contexts) sets it to what it has, or to 1 for an order that needs no co-residency
// at all (slower: key blocks then wait for each other in launch order). Read once per process.
inline int deterministic_chunk_cap() {
  static int const cap = [] {
    char const* v = std::getenv("FLASH3_DETERMINISTIC_CHUNK_CTAS");
    int const n = v != nullptr ? std::atoi(v) : 0;
    return n > 0 ? n : 0;
  }();
  return cap;
}

}  // namespace flash3
