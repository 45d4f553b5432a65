// Device memory with live/peak byte accounting. Every tensor's storage comes from here, so the
// counters measure the real working set (later issues report activation memory with them).
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <utility>

#include "runtime/core/device.h"

namespace weft {

struct MemoryStats {
  int64_t live_bytes = 0;
  int64_t peak_bytes = 0;
  int64_t allocations = 0;  // total number of allocations made
};

// An allocation the machine cannot satisfy (or a size that does not fit in 64 bits). Thrown,
// like std::bad_alloc, from deep inside constructors; the edges that build models catch it and
// return an ordinary error naming the tensor and the size.
class AllocationError : public std::bad_alloc {
 public:
  explicit AllocationError(std::string message) : message_(std::move(message)) {}
  [[nodiscard]] const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

// Thread-safe. CPU memory is 64-byte aligned; CUDA memory comes from cudaMalloc. Throws
// AllocationError when host memory cannot be had.
void* device_allocate(size_t bytes, Device device);
void device_free(void* ptr, size_t bytes, Device device);

MemoryStats memory_stats(Device device);
// Sets the peak to the current live bytes (start of a measured region).
void reset_peak_memory(Device device);

}  // namespace weft
