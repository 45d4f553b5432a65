// Row reductions and exponentials, vectorised: reductions keep kLanes partial sums so that the
// compiler may use SIMD without reassociating a single float accumulator.
#include "kernels/cpu/cpu_util.h"

namespace weft::kernels::cpu {

namespace {
constexpr int64_t kLanes = 16;

float total(const float* acc, float tail) {
  for (int64_t l = 0; l < kLanes; ++l) tail += acc[l];
  return tail;
}
}  // namespace

WEFT_CPU_CLONES float max_of(const float* x, int64_t n) {
  float acc[kLanes];
  std::fill_n(acc, kLanes, kNegInf);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) acc[l] = std::max(acc[l], x[j + l]);
  }
  float m = kNegInf;
  for (; j < n; ++j) m = std::max(m, x[j]);
  for (int64_t l = 0; l < kLanes; ++l) m = std::max(m, acc[l]);
  return m;
}

WEFT_CPU_CLONES float dot(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += a[j + l] * b[j + l];
  }
  float tail = 0.0f;
  for (; j < n; ++j) tail += a[j] * b[j];
  return total(acc, tail);
}

WEFT_CPU_CLONES float exp_shifted(const float* x, float shift, float scale, int64_t n, float* y) {
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) {
      y[j + l] = scale * fast_exp(x[j + l] - shift);
      acc[l] += y[j + l];
    }
  }
  float tail = 0.0f;
  for (; j < n; ++j) {
    y[j] = scale * fast_exp(x[j] - shift);
    tail += y[j];
  }
  return total(acc, tail);
}

WEFT_CPU_CLONES float sum_exp(const float* x, float shift, int64_t n) {
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += fast_exp(x[j + l] - shift);
  }
  float tail = 0.0f;
  for (; j < n; ++j) tail += fast_exp(x[j] - shift);
  return total(acc, tail);
}

WEFT_CPU_CLONES double sum_squares_f64(const float* x, int64_t n) {
  double acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += static_cast<double>(x[j + l]) * x[j + l];
  }
  double sum = 0.0;
  for (; j < n; ++j) sum += static_cast<double>(x[j]) * x[j];
  for (int64_t l = 0; l < kLanes; ++l) sum += acc[l];
  return sum;
}

}  // namespace weft::kernels::cpu
