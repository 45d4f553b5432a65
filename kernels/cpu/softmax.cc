// Row-wise softmax over the last dimension.
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"

namespace weft::kernels::cpu {

void softmax_forward(const Tensor& x, Tensor& y) {
  const int64_t rows = x.dim(0);
  const int64_t cols = x.dim(1);
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  for (int64_t i = 0; i < rows; ++i) {
    std::copy(xp + i * cols, xp + (i + 1) * cols, yp + i * cols);
    softmax_prefix(yp + i * cols, cols, cols);
  }
}

// dx = y * (dy - rowsum(dy * y)).
void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  const int64_t rows = y.dim(0);
  const int64_t cols = y.dim(1);
  const float* yp = y.data<float>();
  const float* dyp = dy.data<float>();
  float* dxp = dx.data<float>();
  for (int64_t i = 0; i < rows; ++i) {
    softmax_backward_row(yp + i * cols, dyp + i * cols, cols, dxp + i * cols);
  }
}

}  // namespace weft::kernels::cpu
