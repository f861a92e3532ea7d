#include "common/gpu_utils.hpp"

#include <sstream>

#include "common/test_data.hpp"

namespace flash3_test {

const std::string& no_gpu_reason() {
  static const std::string reason = [] {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear it, so that later calls do not report it again
      return std::string("no CUDA device: cudaGetDeviceCount failed: ") + cudaGetErrorName(err) + " (" +
             cudaGetErrorString(err) + ")";
    }
    if (count == 0) return std::string("no CUDA device: cudaGetDeviceCount returned 0");
    return std::string();
  }();
  return reason;
}

const std::string& no_sm90_reason() {
  static const std::string reason = []() -> std::string {
    if (!no_gpu_reason().empty()) return no_gpu_reason();
    int device = 0, major = 0, minor = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
      cudaGetLastError();
      return "could not query the compute capability of the CUDA device";
    }
    if (major != 9 || minor != 0) {
      std::ostringstream os;
      os << "the flash3 kernels are compiled for sm_90a only; this device is sm_" << major << minor;
      return os.str();
    }
    return std::string();
  }();
  return reason;
}

void cuda_check(cudaError_t err, const char* expr, const char* file, int line) {
  if (err == cudaSuccess) return;
  std::ostringstream os;
  os << file << ":" << line << ": " << expr << " failed: " << cudaGetErrorName(err) << " (" << cudaGetErrorString(err)
     << ")";
  throw std::runtime_error(os.str());
}

void sync_device(const char* what) {
  cudaError_t err = cudaDeviceSynchronize();
  if (err == cudaSuccess) err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": CUDA error " + cudaGetErrorName(err) + " (" +
                             cudaGetErrorString(err) + ")");
  }
}

flash3::DType to_dtype(Precision p) {
  return p == Precision::kFloat16 ? flash3::DType::kFloat16 : flash3::DType::kBFloat16;
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes) FLASH3_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept : ptr_(other.ptr_), bytes_(other.bytes_) {
  other.ptr_ = nullptr;
  other.bytes_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = other.ptr_;
    bytes_ = other.bytes_;
    other.ptr_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

void DeviceBuffer::poison() { fill_bytes(0xFF); }

void DeviceBuffer::fill_bytes(int value) {
  if (bytes_) FLASH3_CUDA_CHECK(cudaMemset(ptr_, value, bytes_));
}

void DeviceBuffer::upload(const void* src, size_t bytes, size_t offset) {
  if (offset + bytes > bytes_) throw std::out_of_range("DeviceBuffer::upload past the end");
  if (bytes) FLASH3_CUDA_CHECK(cudaMemcpy(static_cast<char*>(ptr_) + offset, src, bytes, cudaMemcpyHostToDevice));
}

void DeviceBuffer::download(void* dst, size_t bytes, size_t offset) const {
  if (offset + bytes > bytes_) throw std::out_of_range("DeviceBuffer::download past the end");
  if (bytes) FLASH3_CUDA_CHECK(cudaMemcpy(dst, static_cast<const char*>(ptr_) + offset, bytes, cudaMemcpyDeviceToHost));
}

DeviceBuffer upload_lowprec(const std::vector<double>& values, Precision p) {
  return DeviceBuffer::from(to_bits(values, p));
}

std::vector<double> download_lowprec(const DeviceBuffer& buffer, size_t count, Precision p) {
  return from_bits(buffer.to_vector<uint16_t>(count), p);
}

std::vector<double> download_float(const DeviceBuffer& buffer, size_t count) {
  const std::vector<float> f = buffer.to_vector<float>(count);
  return std::vector<double>(f.begin(), f.end());
}

}  // namespace flash3_test
