#include "runtime/core/tensor.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/core/allocator.h"
#include "runtime/core/cuda_check.h"

namespace weft {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

namespace {

Device g_default_device = Device::cpu();
// Set by the emulated GPU's first storage: until then DeviceAccess counts nothing, so the real
// devices never pay for the count.
std::atomic<bool> g_emulated_gpu_used{false};
std::atomic<int> g_device_access{0};

void note_device(Device device) {
  if (device.is_emulated_gpu()) g_emulated_gpu_used.store(true, std::memory_order_relaxed);
}

}  // namespace

Device default_device() { return g_default_device; }
void set_default_device(Device device) {
  g_default_device = device;
#ifdef WEFT_HAVE_CUDA
  // Kernels run on the calling thread's current device: this one, from here on.
  if (device.is_cuda()) WEFT_CUDA_CHECK(cudaSetDevice(device.index));
#endif
}

DeviceAccess::DeviceAccess() : counted_(g_emulated_gpu_used.load(std::memory_order_relaxed)) {
  if (counted_) g_device_access.fetch_add(1, std::memory_order_relaxed);
}
DeviceAccess::~DeviceAccess() {
  if (counted_) g_device_access.fetch_sub(1, std::memory_order_relaxed);
}

Storage::Storage(size_t bytes, Device device)
    : data_(device_allocate(bytes, device)), bytes_(bytes), device_(device) {
  note_device(device);
}

Storage::Storage(void* data, size_t bytes, Device device, std::shared_ptr<void> keepalive)
    : data_(data), bytes_(bytes), device_(device), owned_(false), keepalive_(std::move(keepalive)) {
  note_device(device);
}

Storage::~Storage() {
  if (owned_) device_free(data_, bytes_, device_);
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
#ifdef WEFT_HAVE_CUDA
  WEFT_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
#else
  WEFT_CHECK(false) << "this weft build has no CUDA support";
#endif
}

Tensor Tensor::empty(Shape shape, DType dtype, std::optional<Device> device) {
  for (int64_t d : shape) WEFT_CHECK(d >= 0) << "negative dimension in " << shape_str(shape);
  int64_t bytes = static_cast<int64_t>(dtype_size(dtype));
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(bytes, d, &bytes)) {
      throw AllocationError("a tensor of shape " + shape_str(shape) + " has more than 2^63 bytes");
    }
  }
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.storage_ = std::make_shared<Storage>(t.nbytes(), device.value_or(default_device()));
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype, std::optional<Device> device) {
  Tensor t = empty(std::move(shape), dtype, device);
  t.zero_();
  return t;
}

Tensor Tensor::full(Shape shape, float value) {
  Tensor t = empty(std::move(shape), DType::kF32, Device::cpu());
  float* p = t.data<float>();
  std::fill(p, p + t.numel(), value);
  return t.on(default_device());
}

Tensor Tensor::pinned(Shape shape, DType dtype) {
#ifdef WEFT_HAVE_CUDA
  if (cuda_available()) {
    const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
    void* ptr = nullptr;
    WEFT_CUDA_CHECK(cudaHostAlloc(&ptr, std::max<size_t>(bytes, 1), cudaHostAllocDefault));
    std::shared_ptr<void> owner(ptr, [](void* p) { cudaFreeHost(p); });
    return borrow(ptr, std::move(shape), dtype, Device::cpu(), std::move(owner));
  }
#endif
  return empty(std::move(shape), dtype, Device::cpu());
}

Tensor Tensor::borrow(void* data, Shape shape, DType dtype, Device device,
                      std::shared_ptr<void> keepalive) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.storage_ = std::make_shared<Storage>(data, t.nbytes(), device, std::move(keepalive));
  return t;
}

Tensor Tensor::from_floats(const std::vector<float>& values, Shape shape) {
  WEFT_CHECK_EQ(static_cast<int64_t>(values.size()), shape_numel(shape));
  Tensor t = empty(std::move(shape), DType::kF32, Device::cpu());
  std::memcpy(t.raw(), values.data(), t.nbytes());
  return t;
}

Tensor Tensor::from_ints(const std::vector<int64_t>& values, Shape shape) {
  WEFT_CHECK_EQ(static_cast<int64_t>(values.size()), shape_numel(shape));
  Tensor t = empty(std::move(shape), DType::kI64, Device::cpu());
  std::memcpy(t.raw(), values.data(), t.nbytes());
  return t;
}

int64_t Tensor::dim(int i) const {
  const int n = ndim();
  if (i < 0) i += n;
  WEFT_CHECK(i >= 0 && i < n) << "dim " << i << " of " << str();
  return shape_[i];
}

void* Tensor::raw() const {
  void* bytes = bytes_at();
  WEFT_CHECK(!storage_->device().is_emulated_gpu() ||
             g_device_access.load(std::memory_order_relaxed) > 0)
      << "host code touched " << str()
      << " (GPU memory outside a kernel, collective or copy): copy it with host() first";
  return bytes;
}

void* Tensor::bytes_at() const {
  WEFT_CHECK(defined()) << "use of an undefined tensor";
  return static_cast<char*>(storage_->data()) + offset_;
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  WEFT_CHECK(ndim() >= 1) << str();
  WEFT_CHECK(0 <= begin && begin <= end && end <= shape_[0])
      << "slice [" << begin << ", " << end << ") of " << str();
  Tensor t = *this;
  const int64_t row = shape_[0] == 0 ? 0 : numel() / shape_[0];
  t.shape_[0] = end - begin;
  t.offset_ += static_cast<size_t>(begin * row) * dtype_size(dtype_);
  return t;
}

Tensor Tensor::view(Shape shape) const {
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      WEFT_CHECK(infer < 0) << "two -1 entries in view " << shape_str(shape);
      infer = static_cast<int>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    WEFT_CHECK(known > 0 && numel() % known == 0) << "view " << shape_str(shape) << " of " << str();
    shape[infer] = numel() / known;
  }
  WEFT_CHECK_EQ(shape_numel(shape), numel()) << "view " << shape_str(shape) << " of " << str();
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::clone() const { return to(device()); }

Tensor Tensor::to(Device device) const {
  Tensor t = empty(shape_, dtype_, device);
  copy_bytes(t.bytes_at(), device, bytes_at(), this->device(), nbytes());
  return t;
}

Tensor Tensor::on(Device device) const { return this->device() == device ? *this : to(device); }

Tensor Tensor::to_dtype(DType dtype) const {
  if (dtype == dtype_) return clone();
  WEFT_CHECK(is_host()) << "to_dtype needs a CPU tensor, got " << str();
  WEFT_CHECK(is_floating(dtype) && is_floating(dtype_))
      << "to_dtype converts between float types, asked " << str() << " -> " << dtype_name(dtype);
  Tensor t = empty(shape_, dtype, Device::cpu());
  const int64_t n = numel();
  std::vector<float> values = to_floats();
  if (dtype == DType::kF32) {
    std::memcpy(t.raw(), values.data(), n * 4);
  } else {
    auto* out = static_cast<uint16_t*>(t.raw());
    for (int64_t i = 0; i < n; ++i) {
      out[i] = dtype == DType::kBF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
    }
  }
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  WEFT_CHECK(src.shape_ == shape_ && src.dtype_ == dtype_)
      << "copy_from " << src.str() << " into " << str();
  copy_bytes(bytes_at(), device(), src.bytes_at(), src.device(), nbytes());
}

void Tensor::zero_() {
  if (nbytes() == 0) return;
  if (is_cpu()) {
    std::memset(bytes_at(), 0, nbytes());
  } else {
#ifdef WEFT_HAVE_CUDA
    WEFT_CUDA_CHECK(cudaMemset(raw(), 0, nbytes()));
#endif
  }
}

float Tensor::item() const {
  WEFT_CHECK_EQ(numel(), 1) << str();
  return to_floats()[0];
}

std::vector<float> Tensor::to_floats() const {
  const Tensor host = this->host();
  const int64_t n = numel();
  std::vector<float> out(n);
  switch (dtype_) {
    case DType::kF32:
      std::memcpy(out.data(), host.raw(), n * 4);
      break;
    case DType::kBF16: {
      const auto* p = static_cast<const uint16_t*>(host.raw());
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(p[i]);
      break;
    }
    case DType::kF16: {
      const auto* p = static_cast<const uint16_t*>(host.raw());
      for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(p[i]);
      break;
    }
    default:
      WEFT_CHECK(false) << "to_floats of " << str();
  }
  return out;
}

std::vector<int64_t> Tensor::to_ints() const {
  const Tensor host = this->host();
  const int64_t n = numel();
  std::vector<int64_t> out(n);
  for (int64_t i = 0; i < n; ++i) {
    switch (dtype_) {
      case DType::kI32:
        out[i] = static_cast<const int32_t*>(host.raw())[i];
        break;
      case DType::kI64:
        out[i] = static_cast<const int64_t*>(host.raw())[i];
        break;
      case DType::kU8:
        out[i] = static_cast<const uint8_t*>(host.raw())[i];
        break;
      default:
        WEFT_CHECK(false) << "to_ints of " << str();
    }
  }
  return out;
}

std::string Tensor::str() const {
  if (!defined()) return "undefined";
  std::string name(dtype_name(dtype_));
  for (char& c : name) c = static_cast<char>(std::tolower(c));
  return absl::StrCat(name, shape_str(shape_), " ", device().str());
}

}  // namespace weft
