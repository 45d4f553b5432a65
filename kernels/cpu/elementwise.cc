// Elementwise arithmetic on f32 tensors of any shape.
#include <algorithm>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"

namespace weft::kernels::cpu {

void add(const Tensor& a, const Tensor& b, Tensor& out) {
  const float* ap = a.data<float>();
  const float* bp = b.data<float>();
  float* op = out.data<float>();
  const int64_t n = a.numel();
  for (int64_t i = 0; i < n; ++i) op[i] = ap[i] + bp[i];
}

void add_(Tensor& a, const Tensor& b, float alpha) {
  float* ap = a.data<float>();
  const float* bp = b.data<float>();
  const int64_t n = a.numel();
  for (int64_t i = 0; i < n; ++i) ap[i] += alpha * bp[i];
}

void mul_add_(Tensor& a, const Tensor& b, const Tensor& c) {
  float* ap = a.data<float>();
  const float* bp = b.data<float>();
  const float* cp = c.data<float>();
  const int64_t n = a.numel();
  for (int64_t i = 0; i < n; ++i) ap[i] = bp[i] * ap[i] + cp[i];
}

void scale_(Tensor& a, float alpha) {
  float* ap = a.data<float>();
  const int64_t n = a.numel();
  for (int64_t i = 0; i < n; ++i) ap[i] *= alpha;
}

void fill_(Tensor& a, float value) {
  float* ap = a.data<float>();
  std::fill(ap, ap + a.numel(), value);
}

double sum_squares(const Tensor& a) { return sum_squares_f64(a.data<float>(), a.numel()); }

}  // namespace weft::kernels::cpu
