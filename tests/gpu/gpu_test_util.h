// Helpers for the GPU tests: each CUDA kernel runs on device copies of random inputs and is
// compared with the CPU kernel on the same values. Float inputs are stored on the GPU in the
// precision under test (f32 or bf16); the CPU reference gets the same values rounded to that
// precision and computes in f32.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <ostream>
#include <vector>

#include "runtime/core/device.h"
#include "runtime/core/tensor.h"
#include "tests/support/test_util.h"

namespace weft::testing {

// Storage dtype under test and the tolerance of tensors_close for it (relative to the largest
// expected entry): f32 differs from the CPU only by summation order; bf16 storage rounds every
// input and output to 8 bits of mantissa.
struct Precision {
  DType dtype;
  double tol;
};
inline const Precision kF32Precision{DType::kF32, 1e-4};
inline const Precision kBF16Precision{DType::kBF16, 2e-2};

inline void PrintTo(const Precision& p, std::ostream* os) { *os << dtype_name(p.dtype); }

// Skips the test on a machine without a GPU.
#define WEFT_SKIP_WITHOUT_GPU()                                                  \
  do {                                                                           \
    if (::weft::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device here"; \
  } while (0)

// A test fixture whose tests run once per precision.
class GpuPrecisionTest : public ::testing::TestWithParam<Precision> {
 protected:
  void SetUp() override { WEFT_SKIP_WITHOUT_GPU(); }
  [[nodiscard]] DType dtype() const { return GetParam().dtype; }
  [[nodiscard]] double tol() const { return GetParam().tol; }
};

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override { WEFT_SKIP_WITHOUT_GPU(); }
};

// An f32 CPU tensor's values rounded to `dtype` (still f32, on the CPU): the reference's input.
inline Tensor rounded(const Tensor& cpu, DType dtype) {
  return cpu.to_dtype(dtype).to_dtype(DType::kF32);
}

// Random uniform values in [lo, hi), already rounded to `dtype`: feed the result to the CPU
// kernel as is and to the GPU through on_gpu().
inline Tensor random_in(const Shape& shape, uint64_t seed, DType dtype, float lo = -1.0f,
                        float hi = 1.0f) {
  return rounded(random_tensor(shape, seed, lo, hi), dtype);
}

// A device copy of an f32 CPU tensor stored as `dtype` (f32 or bf16).
inline Tensor on_gpu(const Tensor& cpu, DType dtype) {
  return cpu.to_dtype(dtype).to(Device::cuda());
}

// A device copy of any CPU tensor, dtype unchanged (indices, f32-only inputs).
inline Tensor on_gpu(const Tensor& cpu) { return cpu.to(Device::cuda()); }

inline Tensor gpu_empty(const Shape& shape, DType dtype) {
  return Tensor::empty(shape, dtype, Device::cuda());
}

// The same integers as an i32 tensor (the CUDA kernels read i32 and i64 indices).
inline Tensor as_i32(const Tensor& ids) {
  const std::vector<int64_t> values = ids.to_ints();
  Tensor out = Tensor::empty(ids.shape(), DType::kI32);
  int32_t* p = out.data<int32_t>();
  for (size_t i = 0; i < values.size(); ++i) p[i] = static_cast<int32_t>(values[i]);
  return out;
}

}  // namespace weft::testing
