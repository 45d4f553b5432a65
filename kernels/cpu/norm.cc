// RMSNorm over the last dimension: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps).
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"

namespace weft::kernels::cpu {

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y, Tensor& rstd) {
  const int64_t rows = x.dim(0);
  const int64_t dim = x.dim(1);
  const float* xp = x.data<float>();
  const float* wp = w.data<float>();
  float* yp = y.data<float>();
  float* rp = rstd.data<float>();
  for (int64_t i = 0; i < rows; ++i) {
    const float* xr = xp + i * dim;
    float* yr = yp + i * dim;
    const float ss = dot(xr, xr, dim);
    const float r = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
    rp[i] = r;
    for (int64_t j = 0; j < dim; ++j) yr[j] = xr[j] * r * wp[j];
  }
}

// dx_j = rstd * w_j dy_j - rstd^3 / D * x_j * sum_k w_k dy_k x_k;  dw_j += sum_rows dy_j x_j rstd.
void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy,
                      Tensor& dx, Tensor& dw) {
  const int64_t rows = x.dim(0);
  const int64_t dim = x.dim(1);
  const float* xp = x.data<float>();
  const float* wp = w.data<float>();
  const float* rp = rstd.data<float>();
  const float* dyp = dy.data<float>();
  float* dxp = dx.data<float>();
  float* dwp = dw.data<float>();
  for (int64_t i = 0; i < rows; ++i) {
    const float* xr = xp + i * dim;
    const float* dyr = dyp + i * dim;
    float* dxr = dxp + i * dim;
    const float r = rp[i];
    for (int64_t j = 0; j < dim; ++j) dxr[j] = wp[j] * dyr[j];
    const float c = dot(dxr, xr, dim) * r * r * r / static_cast<float>(dim);
    for (int64_t j = 0; j < dim; ++j) {
      dxr[j] = r * dxr[j] - c * xr[j];
      dwp[j] += dyr[j] * xr[j] * r;
    }
  }
}

}  // namespace weft::kernels::cpu
