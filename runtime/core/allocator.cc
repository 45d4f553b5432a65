#include "runtime/core/allocator.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include "runtime/core/check.h"
#include "runtime/core/cuda_check.h"

namespace weft {
namespace {

constexpr int kMaxCudaDevices = 16;

struct Counters {
  std::mutex mutex;
  MemoryStats cpu;
  MemoryStats cuda[kMaxCudaDevices];

  MemoryStats& of(Device device) {
    if (device.is_cpu()) return cpu;
    WEFT_CHECK(device.index >= 0 && device.index < kMaxCudaDevices) << device.str();
    return cuda[device.index];
  }
};

Counters& counters() {
  static Counters instance;
  return instance;
}

void account(Device device, int64_t delta) {
  Counters& c = counters();
  std::lock_guard<std::mutex> lock(c.mutex);
  MemoryStats& s = c.of(device);
  s.live_bytes += delta;
  if (delta > 0) {
    s.allocations += 1;
    s.peak_bytes = std::max(s.peak_bytes, s.live_bytes);
  }
}

}  // namespace

void* device_allocate(size_t bytes, Device device) {
  void* ptr = nullptr;
  const size_t padded = std::max<size_t>(64, (bytes + 63) / 64 * 64);
  if (device.is_cpu()) {
    ptr = std::aligned_alloc(64, padded);
    if (ptr == nullptr) {
      throw AllocationError("out of host memory allocating " + std::to_string(bytes) + " bytes");
    }
  } else {
#ifdef WEFT_HAVE_CUDA
    WEFT_CUDA_CHECK(cudaSetDevice(device.index));
    WEFT_CUDA_CHECK(cudaMalloc(&ptr, padded));
#else
    WEFT_CHECK(false) << "this weft build has no CUDA support";
#endif
  }
  account(device, static_cast<int64_t>(bytes));
  return ptr;
}

void device_free(void* ptr, size_t bytes, Device device) {
  if (ptr == nullptr) return;
  if (device.is_cpu()) {
    std::free(ptr);
  } else {
#ifdef WEFT_HAVE_CUDA
    WEFT_CUDA_CHECK(cudaFree(ptr));
#endif
  }
  account(device, -static_cast<int64_t>(bytes));
}

MemoryStats memory_stats(Device device) {
  Counters& c = counters();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.of(device);
}

void reset_peak_memory(Device device) {
  Counters& c = counters();
  std::lock_guard<std::mutex> lock(c.mutex);
  MemoryStats& s = c.of(device);
  s.peak_bytes = s.live_bytes;
}

bool cuda_available() { return cuda_device_count() > 0; }

int cuda_device_count() {
#ifdef WEFT_HAVE_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) return 0;
  return count;
#else
  return 0;
#endif
}

}  // namespace weft
