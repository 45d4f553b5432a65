// Tensor: shared storage + dtype + shape + byte offset. Always contiguous (row-major); views
// share storage. slice() cuts the first dimension, view() reshapes.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/core/check.h"
#include "runtime/core/device.h"
#include "runtime/core/dtype.h"

namespace weft {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[2, 3, 4]"

// A block of device memory. Owned (from the allocator) or borrowed (an mmap'd file region kept
// alive by `keepalive`).
class Storage {
 public:
  Storage(size_t bytes, Device device);
  Storage(void* data, size_t bytes, Device device, std::shared_ptr<void> keepalive);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
  bool owned_ = true;
  std::shared_ptr<void> keepalive_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined tensor: defined() is false

  // Without a device: on default_device() (device.h).
  [[nodiscard]] static Tensor empty(Shape shape, DType dtype = DType::kF32,
                                    std::optional<Device> device = std::nullopt);
  [[nodiscard]] static Tensor zeros(Shape shape, DType dtype = DType::kF32,
                                    std::optional<Device> device = std::nullopt);
  [[nodiscard]] static Tensor full(Shape shape, float value);  // f32 on default_device()
  // Page-locked host memory (cudaHostAlloc) where a GPU is visible, which device copies fill at
  // full bus speed and without staging; plain host memory otherwise. For buffers that take GPU
  // tensors to the host repeatedly (asynchronous checkpoints).
  [[nodiscard]] static Tensor pinned(Shape shape, DType dtype);
  // Borrows memory owned elsewhere (e.g. an mmap'd safetensors file); `keepalive` holds it.
  [[nodiscard]] static Tensor borrow(void* data, Shape shape, DType dtype, Device device,
                                     std::shared_ptr<void> keepalive);
  // Copies host values into a new tensor in host memory.
  [[nodiscard]] static Tensor from_floats(const std::vector<float>& values, Shape shape);
  [[nodiscard]] static Tensor from_ints(const std::vector<int64_t>& values, Shape shape);

  [[nodiscard]] bool defined() const { return storage_ != nullptr; }
  [[nodiscard]] const Shape& shape() const { return shape_; }
  [[nodiscard]] int ndim() const { return static_cast<int>(shape_.size()); }
  // Size of dimension i; negative i counts from the end.
  [[nodiscard]] int64_t dim(int i) const;
  [[nodiscard]] int64_t numel() const { return shape_numel(shape_); }
  [[nodiscard]] size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  [[nodiscard]] DType dtype() const { return dtype_; }
  [[nodiscard]] Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  [[nodiscard]] bool is_cpu() const { return device().is_cpu(); }
  [[nodiscard]] bool is_host() const { return device().is_host(); }

  [[nodiscard]] void* raw() const;
  template <typename T>
  [[nodiscard]] T* data() const {
    WEFT_CHECK(dtype_ == DTypeOf<T>::value)
        << "tensor holds " << dtype_name(dtype_) << ", asked for " << dtype_name(DTypeOf<T>::value);
    return static_cast<T*>(raw());
  }

  // Rows [begin, end) of the first dimension; shares storage.
  [[nodiscard]] Tensor slice(int64_t begin, int64_t end) const;
  // Same elements, another shape; one entry may be -1 (inferred). Shares storage.
  [[nodiscard]] Tensor view(Shape shape) const;

  [[nodiscard]] Tensor clone() const;
  // A copy on `device`.
  [[nodiscard]] Tensor to(Device device) const;
  // This tensor if it is on `device` already, else a copy there.
  [[nodiscard]] Tensor on(Device device) const;
  // on(Device::cpu()): host memory that host code may read.
  [[nodiscard]] Tensor host() const { return on(Device::cpu()); }
  // Converts between f32, bf16 and f16 (and copies otherwise); CPU tensors only.
  [[nodiscard]] Tensor to_dtype(DType dtype) const;

  // Copies `src` (same shape and dtype; any devices) into this tensor's memory.
  void copy_from(const Tensor& src);
  void zero_();

  // Host-side element access for tests and small CPU work (f32 CPU tensors).
  [[nodiscard]] float item() const;
  [[nodiscard]] std::vector<float> to_floats() const;  // any float dtype, any device
  [[nodiscard]] std::vector<int64_t> to_ints() const;  // i32/i64/u8, any device

  [[nodiscard]] std::string str() const;  // "f32[2, 3] cpu"

 private:
  // raw() without the emulated GPU's host-access check: for the explicit copies above.
  [[nodiscard]] void* bytes_at() const;

  std::shared_ptr<Storage> storage_;
  Shape shape_;
  DType dtype_ = DType::kF32;
  size_t offset_ = 0;  // bytes into storage
};

// While one is alive (on any thread), the emulated GPU's memory may be touched by host code:
// opened around kernels, collectives and copies, the code that stands for the device. It counts
// only once the emulated GPU (device.h) holds memory; before, and in runs without it, it is a
// relaxed load.
class DeviceAccess {
 public:
  DeviceAccess();
  ~DeviceAccess();
  DeviceAccess(const DeviceAccess&) = delete;
  DeviceAccess& operator=(const DeviceAccess&) = delete;

 private:
  bool counted_;
};

// Copy `bytes` between any two devices (host<->host is memcpy).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);

}  // namespace weft
