// NVML loaded with dlopen at run time: the bench must link and run where libnvidia-ml is absent (build machines,
// containers without the driver's utility libraries), and then reports "n/a" for clocks and power.
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cstdio>
#include <string>

#include "bench_common.hpp"

namespace flash3_bench {
namespace {

// The few NVML declarations used here (nvml.h is not needed at build time). ABI from the NVML reference.
using nvmlReturn_t = int;
using nvmlDevice_t = void*;
constexpr nvmlReturn_t kNvmlSuccess = 0;
constexpr int kNvmlClockSm = 1;
constexpr int kNvmlClockMem = 2;
constexpr int kNvmlTemperatureGpu = 0;

using FnInit = nvmlReturn_t (*)();
using FnShutdown = nvmlReturn_t (*)();
using FnErrorString = const char* (*)(nvmlReturn_t);
using FnHandleByPci = nvmlReturn_t (*)(const char*, nvmlDevice_t*);
using FnHandleByUuid = nvmlReturn_t (*)(const char*, nvmlDevice_t*);
using FnHandleByIndex = nvmlReturn_t (*)(unsigned int, nvmlDevice_t*);
using FnCount = nvmlReturn_t (*)(unsigned int*);
using FnClock = nvmlReturn_t (*)(nvmlDevice_t, int, unsigned int*);
using FnUInt = nvmlReturn_t (*)(nvmlDevice_t, unsigned int*);
using FnTemp = nvmlReturn_t (*)(nvmlDevice_t, int, unsigned int*);
using FnReasons = nvmlReturn_t (*)(nvmlDevice_t, unsigned long long*);

struct NvmlFns {
  FnInit init = nullptr;
  FnShutdown shutdown = nullptr;
  FnErrorString error_string = nullptr;
  FnHandleByPci by_pci = nullptr;
  FnHandleByUuid by_uuid = nullptr;
  FnHandleByIndex by_index = nullptr;
  FnCount count = nullptr;
  FnClock clock = nullptr;
  FnClock max_clock = nullptr;
  FnUInt power_limit = nullptr;
  FnUInt power_usage = nullptr;
  FnTemp temperature = nullptr;
  FnReasons reasons = nullptr;
};
NvmlFns g_fns;

template <typename F>
F load(void* lib, const char* name) {
  return reinterpret_cast<F>(dlsym(lib, name));
}

std::string nvml_error(nvmlReturn_t rc) {
  const char* s = g_fns.error_string ? g_fns.error_string(rc) : nullptr;
  return std::string(s ? s : "unknown NVML error") + " (" + std::to_string(rc) + ")";
}

// "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", the form nvmlDeviceGetHandleByUUID expects.
std::string uuid_string(const cudaUUID_t& uuid) {
  const auto* b = reinterpret_cast<const unsigned char*>(uuid.bytes);
  char buf[64];
  std::snprintf(buf, sizeof(buf),
                "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
                b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return buf;
}

}  // namespace

Nvml& Nvml::instance() {
  static Nvml nvml;
  return nvml;
}

Nvml::~Nvml() {
  // The library stays loaded (dlclose at exit gains nothing and can race other static destructors).
  if (device_ != nullptr && g_fns.shutdown != nullptr) g_fns.shutdown();
}

bool Nvml::open(int cuda_device) {
  if (device_ != nullptr) return true;
  if (lib_ == nullptr) {
    lib_ = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib_ == nullptr) {
      const char* why = dlerror();
      error_ = std::string("cannot load libnvidia-ml.so.1: ") + (why ? why : "unknown dlopen error");
      return false;
    }
    g_fns.init = load<FnInit>(lib_, "nvmlInit_v2");
    g_fns.shutdown = load<FnShutdown>(lib_, "nvmlShutdown");
    g_fns.error_string = load<FnErrorString>(lib_, "nvmlErrorString");
    g_fns.by_pci = load<FnHandleByPci>(lib_, "nvmlDeviceGetHandleByPciBusId_v2");
    g_fns.by_uuid = load<FnHandleByUuid>(lib_, "nvmlDeviceGetHandleByUUID");
    g_fns.by_index = load<FnHandleByIndex>(lib_, "nvmlDeviceGetHandleByIndex_v2");
    g_fns.count = load<FnCount>(lib_, "nvmlDeviceGetCount_v2");
    g_fns.clock = load<FnClock>(lib_, "nvmlDeviceGetClockInfo");
    g_fns.max_clock = load<FnClock>(lib_, "nvmlDeviceGetMaxClockInfo");
    g_fns.power_limit = load<FnUInt>(lib_, "nvmlDeviceGetEnforcedPowerLimit");
    g_fns.power_usage = load<FnUInt>(lib_, "nvmlDeviceGetPowerUsage");
    g_fns.temperature = load<FnTemp>(lib_, "nvmlDeviceGetTemperature");
    g_fns.reasons = load<FnReasons>(lib_, "nvmlDeviceGetCurrentClocksEventReasons");
    if (g_fns.reasons == nullptr) g_fns.reasons = load<FnReasons>(lib_, "nvmlDeviceGetCurrentClocksThrottleReasons");
    if (g_fns.init == nullptr || g_fns.shutdown == nullptr) {
      error_ = "libnvidia-ml.so.1 lacks nvmlInit_v2/nvmlShutdown";
      return false;
    }
    const nvmlReturn_t rc = g_fns.init();
    if (rc != kNvmlSuccess) {
      error_ = "nvmlInit_v2 failed: " + nvml_error(rc);
      g_fns.init = nullptr;  // do not call shutdown for an init that failed
      g_fns.shutdown = nullptr;
      return false;
    }
  }
  if (g_fns.init == nullptr) return false;  // an earlier open() failed to initialize

  // CUDA and NVML number devices differently (CUDA_VISIBLE_DEVICES, ordering): match by PCI bus id, then UUID.
  nvmlDevice_t dev = nullptr;
  std::string why;
  char bus_id[64] = {0};
  if (cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), cuda_device) == cudaSuccess && g_fns.by_pci != nullptr) {
    const nvmlReturn_t rc = g_fns.by_pci(bus_id, &dev);
    if (rc != kNvmlSuccess) {
      why = std::string("by PCI bus id ") + bus_id + ": " + nvml_error(rc);
      dev = nullptr;
    }
  } else {
    (void)cudaGetLastError();
    why = "no PCI bus id";
  }
  if (dev == nullptr && g_fns.by_uuid != nullptr) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, cuda_device) == cudaSuccess) {
      const std::string uuid = uuid_string(prop.uuid);
      const nvmlReturn_t rc = g_fns.by_uuid(uuid.c_str(), &dev);
      if (rc != kNvmlSuccess) {
        why += "; by UUID " + uuid + ": " + nvml_error(rc);
        dev = nullptr;
      }
    } else {
      (void)cudaGetLastError();
    }
  }
  if (dev == nullptr && g_fns.count != nullptr && g_fns.by_index != nullptr) {
    // Unambiguous only when both sides see exactly one GPU.
    unsigned int nvml_count = 0;
    int cuda_count = 0;
    if (g_fns.count(&nvml_count) == kNvmlSuccess && nvml_count == 1 && cudaGetDeviceCount(&cuda_count) == cudaSuccess &&
        cuda_count == 1 && g_fns.by_index(0, &dev) != kNvmlSuccess) {
      dev = nullptr;
    }
    (void)cudaGetLastError();
  }
  if (dev == nullptr) {
    error_ = "no NVML device matches CUDA device " + std::to_string(cuda_device) + " (" + why + ")";
    return false;
  }
  device_ = dev;
  error_.clear();
  return true;
}

int Nvml::sm_clock_mhz() const {
  if (device_ == nullptr || g_fns.clock == nullptr) return -1;
  unsigned int mhz = 0;
  return g_fns.clock(device_, kNvmlClockSm, &mhz) == kNvmlSuccess ? static_cast<int>(mhz) : -1;
}

GpuState Nvml::query() const {
  GpuState s;
  if (device_ == nullptr) {
    s.error = error_;
    return s;
  }
  s.available = true;
  unsigned int u = 0;
  if (g_fns.clock && g_fns.clock(device_, kNvmlClockSm, &u) == kNvmlSuccess) s.sm_clock_mhz = static_cast<int>(u);
  if (g_fns.clock && g_fns.clock(device_, kNvmlClockMem, &u) == kNvmlSuccess) s.mem_clock_mhz = static_cast<int>(u);
  if (g_fns.max_clock && g_fns.max_clock(device_, kNvmlClockSm, &u) == kNvmlSuccess) {
    s.max_sm_clock_mhz = static_cast<int>(u);
  }
  if (g_fns.max_clock && g_fns.max_clock(device_, kNvmlClockMem, &u) == kNvmlSuccess) {
    s.max_mem_clock_mhz = static_cast<int>(u);
  }
  if (g_fns.power_limit && g_fns.power_limit(device_, &u) == kNvmlSuccess) s.power_limit_w = u / 1000.0;
  if (g_fns.power_usage && g_fns.power_usage(device_, &u) == kNvmlSuccess) s.power_draw_w = u / 1000.0;
  if (g_fns.temperature && g_fns.temperature(device_, kNvmlTemperatureGpu, &u) == kNvmlSuccess) {
    s.temperature_c = static_cast<int>(u);
  }
  unsigned long long reasons = 0;
  if (g_fns.reasons && g_fns.reasons(device_, &reasons) == kNvmlSuccess) {
    s.clock_event_reasons = static_cast<long long>(reasons);
  }
  return s;
}

}  // namespace flash3_bench
