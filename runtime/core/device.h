// Where a tensor lives.
#pragma once

#include <string>

namespace weft {

enum class DeviceType : uint8_t { kCPU, kCUDA };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;

  static Device cpu() { return {DeviceType::kCPU, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::kCUDA, index}; }
  // A stand-in for a GPU on machines without one (tests of the device path): host memory and the
  // CPU kernels and MPI, but a device of its own. A kernel given one of its tensors and a host
  // tensor fails the same-device check, and host code that reads or writes its memory outside a
  // kernel, a collective or an explicit copy fails (tensor.h, DeviceAccess), as it would crash or
  // read garbage on a GPU. `--device cuda` resolves to it under WEFT_EMULATE_GPU=1.
  static Device emulated_gpu() { return {DeviceType::kCPU, 1}; }
  // Runs on the CPU kernels (the host or the emulated GPU).
  bool is_cpu() const { return type == DeviceType::kCPU; }
  bool is_cuda() const { return type == DeviceType::kCUDA; }
  // Memory host code may touch directly.
  bool is_host() const { return type == DeviceType::kCPU && index == 0; }
  bool is_emulated_gpu() const { return type == DeviceType::kCPU && index == 1; }
  bool operator==(const Device&) const = default;
  std::string str() const {
    if (is_cpu()) return index == 0 ? "cpu" : "emulated-gpu";
    return "cuda:" + std::to_string(index);
  }
};

// Where Tensor::empty, zeros and full allocate when no device is named: the host unless a
// command chose a device (--device); a CUDA device also becomes the calling thread's current
// one. Set once, before any thread that allocates starts.
Device default_device();
void set_default_device(Device device);

// True when weft was built with CUDA and the process sees at least one GPU.
bool cuda_available();
int cuda_device_count();

}  // namespace weft
