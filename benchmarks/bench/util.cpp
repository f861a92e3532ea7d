// flash3-bench utilities: CUDA error checks, device buffers, event timing.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "bench_common.hpp"

namespace flash3_bench {

void check_cuda(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return;
  throw BenchError(what + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

DeviceBuffer::DeviceBuffer(size_t bytes, const std::string& what) {
  if (bytes == 0) return;
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // an allocation failure is not sticky; clear it so later checks see no stale error
    check_cuda(e, "cudaMalloc(" + std::to_string(bytes) + " bytes) for " + what);
  }
  ptr_ = p;
  bytes_ = bytes;
}

DeviceBuffer::~DeviceBuffer() { reset(); }

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    reset();
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

void DeviceBuffer::reset() {
  if (ptr_ != nullptr) cudaFree(ptr_);  // a failure here cannot be acted on; the next checked call reports it
  ptr_ = nullptr;
  bytes_ = 0;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

namespace {

// Events destroyed on every exit path.
class EventList {
 public:
  explicit EventList(size_t n) {
    events_.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      cudaEvent_t e = nullptr;
      check_cuda(cudaEventCreate(&e), "cudaEventCreate");
      events_.push_back(e);
    }
  }
  ~EventList() {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
  }
  EventList(const EventList&) = delete;
  EventList& operator=(const EventList&) = delete;
  cudaEvent_t operator[](size_t i) const { return events_[i]; }

 private:
  std::vector<cudaEvent_t> events_;
};

}  // namespace

Timing time_calls(const std::function<void(int)>& run, const std::function<void(int)>& between, int warmup,
                  int iters, cudaStream_t stream, double backlog_ms) {
  if (iters < 1) iters = 1;
  for (int i = 0; i < warmup; ++i) {
    if (between) between(i);
    run(i);
  }
  check_cuda(cudaGetLastError(), "warm-up launches");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize after warm-up");

  EventList events(2 * static_cast<size_t>(iters));
  if (backlog_ms > 0) check_cuda(gpu_sleep(backlog_ms, stream), "GPU sleep (backlog) launch");
  const auto enqueue_start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) {
    if (between) between(warmup + i);
    check_cuda(cudaEventRecord(events[2 * i], stream), "cudaEventRecord");
    run(warmup + i);
    check_cuda(cudaEventRecord(events[2 * i + 1], stream), "cudaEventRecord");
  }
  Timing t;
  t.enqueue_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - enqueue_start).count();
  t.backlog_short = backlog_ms > 0 && t.enqueue_ms > backlog_ms;
  // Sampled before synchronizing, while the GPU is still working through the timed calls.
  t.sm_clock_mhz = Nvml::instance().sm_clock_mhz();
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize after the timed calls");
  check_cuda(cudaGetLastError(), "timed launches");

  std::vector<double> ms(iters);
  for (int i = 0; i < iters; ++i) {
    float e = 0.f;
    check_cuda(cudaEventElapsedTime(&e, events[2 * i], events[2 * i + 1]), "cudaEventElapsedTime");
    ms[i] = e;
  }
  t.iters = iters;
  t.min_ms = *std::min_element(ms.begin(), ms.end());
  t.max_ms = *std::max_element(ms.begin(), ms.end());
  t.median_ms = median(std::move(ms));
  return t;
}

}  // namespace flash3_bench
