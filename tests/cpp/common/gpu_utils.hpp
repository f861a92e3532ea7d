// Test helpers for the GPU: skipping where no (suitable) device exists, CUDA error checks, RAII device buffers,
// uploads/downloads of fp16/bf16 data held on the host as doubles, and NaN poisoning of outputs.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "flash3/types.hpp"
#include "reference/host_float16.hpp"

namespace flash3_test {

using flash3::ref::Precision;

// "" when a CUDA device is usable, else "no CUDA device: <reason>". Queried once per process.
const std::string& no_gpu_reason();
// "" when the current device can run the sm_90a kernels (an sm_90 GPU: H100, H200), else why not.
const std::string& no_sm90_reason();
inline bool has_gpu() { return no_gpu_reason().empty(); }

// Skip the calling test (a test body or a void helper called from one) unless a CUDA device is present / unless it
// is an sm_90 device. Tests that check error reporting without a device use neither.
#define FLASH3_REQUIRE_GPU()                                                 \
  do {                                                                       \
    const std::string& flash3_skip_reason_ = ::flash3_test::no_gpu_reason(); \
    if (!flash3_skip_reason_.empty()) GTEST_SKIP() << flash3_skip_reason_;   \
  } while (0)

#define FLASH3_REQUIRE_SM90()                                                 \
  do {                                                                        \
    const std::string& flash3_skip_reason_ = ::flash3_test::no_sm90_reason(); \
    if (!flash3_skip_reason_.empty()) GTEST_SKIP() << flash3_skip_reason_;    \
  } while (0)

// Throws std::runtime_error naming the failed call, file and line (gtest reports it as a test failure).
#define FLASH3_CUDA_CHECK(expr) ::flash3_test::cuda_check((expr), #expr, __FILE__, __LINE__)
void cuda_check(cudaError_t err, const char* expr, const char* file, int line);

// Waits for the device and turns any pending (asynchronous) CUDA error into an exception.
void sync_device(const char* what);

flash3::DType to_dtype(Precision p);

// A device allocation that frees itself. Zero bytes gives a null pointer.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return ptr_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

  // Fills every byte with 0xFF: a NaN in fp16, bf16 and fp32 alike, so any element a kernel fails to write shows up.
  void poison();
  void fill_bytes(int value);
  void upload(const void* src, size_t bytes, size_t offset = 0);
  void download(void* dst, size_t bytes, size_t offset = 0) const;

  template <class T>
  static DeviceBuffer from(const std::vector<T>& host) {
    DeviceBuffer b(host.size() * sizeof(T));
    if (!host.empty()) b.upload(host.data(), host.size() * sizeof(T));
    return b;
  }
  template <class T>
  std::vector<T> to_vector(size_t count) const {
    std::vector<T> host(count);
    if (count) download(host.data(), count * sizeof(T));
    return host;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Host doubles (already representable) -> device fp16/bf16 array.
DeviceBuffer upload_lowprec(const std::vector<double>& values, Precision p);
// Device fp16/bf16 array -> host doubles.
std::vector<double> download_lowprec(const DeviceBuffer& buffer, size_t count, Precision p);
// Device fp32 array -> host doubles.
std::vector<double> download_float(const DeviceBuffer& buffer, size_t count);

}  // namespace flash3_test
