// Small helpers shared by the CPU kernels (private to kernels/cpu).
#pragma once

#include <cblas.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "runtime/core/tensor.h"

namespace weft::kernels::cpu {

inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Row-major c[m,n] = alpha * op(a) @ op(b) + beta * c on raw pointers with leading dimensions, so
// that one head's rows of a [T, heads, d] tensor are read and written in place (ld = heads*d).
// beta = 0 overwrites c (NaNs included); empty shapes are handled here because BLAS rejects them.
inline void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                  int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i) {
      float* row = c + i * ldc;
      for (int64_t j = 0; j < n; ++j) row[j] = beta == 0.0f ? 0.0f : beta * row[j];
    }
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(m), static_cast<blasint>(n),
              static_cast<blasint>(k), alpha, a, static_cast<blasint>(lda), b,
              static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

// Reads an i32 or i64 index tensor as int64.
class IndexReader {
 public:
  explicit IndexReader(const Tensor& t) : data_(t.raw()), wide_(t.dtype() == DType::kI64) {}
  int64_t operator[](int64_t i) const {
    return wide_ ? static_cast<const int64_t*>(data_)[i] : static_cast<const int32_t*>(data_)[i];
  }

 private:
  const void* data_;
  bool wide_;
};

// Hot loops are compiled for AVX-512 and AVX2+FMA next to the baseline and picked at load time
// (the build targets plain x86-64).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define WEFT_CPU_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define WEFT_CPU_CLONES
#endif

// exp(x) in f32 without a library call, so that loops around it vectorise: Cephes' expf
// (range reduction by ln 2, degree-6 polynomial), relative error under 1.2e-7 on
// [-87.3, 88.3]; 0 below that range (so exp(-inf) = 0), 2.4e38 above it, NaN stays NaN.
[[gnu::always_inline]] inline float fast_exp(float x) {
  constexpr float kLow = -87.3365447504f;
  const float c = std::max(std::min(x, 88.3762626647949f), kLow);
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (c * 1.44269504088896341f + kRound) - kRound;
  const float r = (c - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float two_n = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return x < kLow ? 0.0f : p * two_n;
}

// Vectorised row helpers (vec_math.cc).
float max_of(const float* x, int64_t n);
float dot(const float* a, const float* b, int64_t n);
// y[j] = scale * exp(x[j] - shift) for j < n; returns sum_j y[j]. x and y may alias.
float exp_shifted(const float* x, float shift, float scale, int64_t n, float* y);
// sum_j exp(x[j] - shift) without storing the terms.
float sum_exp(const float* x, float shift, int64_t n);
// sum_j x[j]^2 accumulated in double.
double sum_squares_f64(const float* x, int64_t n);

// In place on row[0, width): softmax over the first n entries, zero after them. Returns the
// log-sum-exp of the first n entries (-inf when n == 0).
inline float softmax_prefix(float* row, int64_t n, int64_t width) {
  std::fill(row + n, row + width, 0.0f);
  if (n == 0) return kNegInf;
  const float m = max_of(row, n);
  const float sum = exp_shifted(row, m, 1.0f, n, row);
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) row[j] *= inv;
  return m + std::log(sum);
}

// dx[0, n) = y * (dy - sum(dy * y)): the softmax backward of one row.
inline void softmax_backward_row(const float* y, const float* dy, int64_t n, float* dx) {
  const float yd = dot(y, dy, n);
  for (int64_t j = 0; j < n; ++j) dx[j] = y[j] * (dy[j] - yd);
}

}  // namespace weft::kernels::cpu
