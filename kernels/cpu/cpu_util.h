// Small helpers shared by the CPU kernels (private to kernels/cpu).
#pragma once

#include <cblas.h>

#include <algorithm>
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

inline float max_of(const float* x, int64_t n) {
  float m = kNegInf;
  for (int64_t j = 0; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

// y[j] = exp(x[j] - shift) for j < n; returns their sum. x and y may alias.
inline float exp_shifted(const float* x, float shift, int64_t n, float* y) {
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    y[j] = std::exp(x[j] - shift);
    sum += y[j];
  }
  return sum;
}

// In place on row[0, width): softmax over the first n entries, zero after them. Returns the
// log-sum-exp of the first n entries (-inf when n == 0).
inline float softmax_prefix(float* row, int64_t n, int64_t width) {
  std::fill(row + n, row + width, 0.0f);
  if (n == 0) return kNegInf;
  const float m = max_of(row, n);
  const float sum = exp_shifted(row, m, n, row);
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) row[j] *= inv;
  return m + std::log(sum);
}

// dx[0, n) = y * (dy - sum(dy * y)): the softmax backward of one row.
inline void softmax_backward_row(const float* y, const float* dy, int64_t n, float* dx) {
  float dot = 0.0f;
  for (int64_t j = 0; j < n; ++j) dot += y[j] * dy[j];
  for (int64_t j = 0; j < n; ++j) dx[j] = y[j] * (dy[j] - dot);
}

}  // namespace weft::kernels::cpu
