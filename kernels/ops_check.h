// What every kernels/ops_*.cc shares: the checks of one call (shapes, dtypes, one device), the
// dispatch to kernels/cpu or kernels/cuda, and bf16 mode's rounding (ops_dense.cc). Internal to
// kernels/.
#pragma once

#include <initializer_list>
#include <string>

#include "kernels/cpu/cpu_ops.h"
#include "runtime/core/tensor.h"
#ifdef WEFT_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

namespace weft::kernels::detail {

// The checks of one call, named after the op so that every message says where it failed.
class Check {
 public:
  explicit Check(const char* op) : op_(op) {}

  // All defined tensors on one device; returns it. Undefined entries (optional inputs) are
  // skipped.
  Device device(std::initializer_list<const Tensor*> tensors) const {
    const Tensor* first = nullptr;
    for (const Tensor* t : tensors) {
      if (t == nullptr || !t->defined()) continue;
      if (first == nullptr) first = t;
      WEFT_CHECK(t->device() == first->device())
          << op_ << ": tensors on " << first->device().str() << " and " << t->device().str() << " ("
          << first->str() << ", " << t->str() << ")";
    }
    WEFT_CHECK(first != nullptr) << op_ << ": no defined tensor";
    return first->device();
  }

  // A floating tensor: f32 on CPU; f32 or bf16 on CUDA.
  const Check& floating(const char* name, const Tensor& t) const {
    defined(name, t);
    const bool ok = t.dtype() == DType::kF32 || (t.device().is_cuda() && t.dtype() == DType::kBF16);
    WEFT_CHECK(ok) << op_ << ": " << name << " is " << t.str()
                   << (t.is_cpu() ? ", expected f32 on CPU" : ", expected f32 or bf16");
    return *this;
  }
  const Check& f32(const char* name, const Tensor& t) const {
    defined(name, t);
    WEFT_CHECK(t.dtype() == DType::kF32)
        << op_ << ": " << name << " is " << t.str() << ", expected f32";
    return *this;
  }
  const Check& index(const char* name, const Tensor& t) const {
    defined(name, t);
    WEFT_CHECK(t.dtype() == DType::kI32 || t.dtype() == DType::kI64)
        << op_ << ": " << name << " is " << t.str() << ", expected i32 or i64";
    return *this;
  }
  const Check& shape(const char* name, const Tensor& t, const Shape& want) const {
    defined(name, t);
    WEFT_CHECK(t.shape() == want) << op_ << ": " << name << " is " << shape_str(t.shape())
                                  << ", expected " << shape_str(want);
    return *this;
  }
  const Check& ndim(const char* name, const Tensor& t, int n) const {
    defined(name, t);
    WEFT_CHECK(t.ndim() == n) << op_ << ": " << name << " is " << shape_str(t.shape())
                              << ", expected " << n << " dimensions";
    return *this;
  }
  const Check& numel(const char* name, const Tensor& t, int64_t n) const {
    defined(name, t);
    WEFT_CHECK(t.numel() == n) << op_ << ": " << name << " is " << shape_str(t.shape())
                               << ", expected " << n << " elements";
    return *this;
  }
  const Check& that(bool condition, const std::string& what) const {
    WEFT_CHECK(condition) << op_ << ": " << what;
    return *this;
  }

 private:
  void defined(const char* name, const Tensor& t) const {
    WEFT_CHECK(t.defined()) << op_ << ": " << name << " is undefined";
  }
  const char* op_;
};

// [..., D] -> [N, D] (shares storage, so outputs written through the view land in t).
inline Tensor rows_of(const Tensor& t) { return t.view({-1, t.dim(-1)}); }

// bf16 mode (ops.h set_bf16_compute), defined in ops_dense.cc. bf16_output rounds an f32 result
// in place to bf16 values (a bf16 store); bf16_input is `t` rounded to bf16 (an f32 copy of bf16
// values on the CPU, a bf16 tensor on CUDA), or `t` itself outside bf16 mode.
void bf16_output(Tensor& t);
Tensor bf16_input(const Tensor& t);

}  // namespace weft::kernels::detail

// Calls cpu::fn or cuda::fn by the device of the call's tensors. The kernel may touch the
// emulated GPU's memory (DeviceAccess, tensor.h).
#ifdef WEFT_HAVE_CUDA
#define WEFT_DISPATCH(dev, fn, ...) \
  (::weft::DeviceAccess(), (dev).is_cpu() ? cpu::fn(__VA_ARGS__) : cuda::fn(__VA_ARGS__))
#else
#define WEFT_DISPATCH(dev, fn, ...)                                                               \
  (::weft::DeviceAccess(), (WEFT_CHECK((dev).is_cpu()) << #fn ": no CUDA support in this build"), \
   cpu::fn(__VA_ARGS__))
#endif
