// RMSNorm forward and backward: one row per block, statistics in f32.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/internal.h"
#include "kernels/cuda/rows.cuh"

namespace weft::kernels::cuda {
namespace {

// y[N,D] = x * rstd * w, rstd[N] = 1/sqrt(mean x^2 + eps).
__global__ void rmsnorm_forward_kernel(FloatRef x, FloatRef w, float eps, FloatRef y, FloatRef rstd,
                                       int64_t rows, int64_t dim) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * dim;
    float ss = 0.0f;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
      const float v = x.load(base + j);
      ss += v * v;
    }
    ss = block_reduce(ss, SumOp());
    const float r = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
    if (threadIdx.x == 0) rstd.store(row, r);
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
      y.store(base + j, x.load(base + j) * r * w.load(j));
    }
  }
}

// dx_j = r w_j dy_j - (r^3 / D) x_j sum_k dy_k w_k x_k.
__global__ void rmsnorm_backward_kernel(FloatRef x, FloatRef w, FloatRef rstd, FloatRef dy,
                                        FloatRef dx, int64_t rows, int64_t dim) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * dim;
    float dot = 0.0f;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
      dot += dy.load(base + j) * w.load(j) * x.load(base + j);
    }
    dot = block_reduce(dot, SumOp());
    const float r = rstd.load(row);
    const float coef = r * r * r * dot / static_cast<float>(dim);
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
      dx.store(base + j, r * w.load(j) * dy.load(base + j) - coef * x.load(base + j));
    }
  }
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y, Tensor& rstd) {
  const int64_t dim = w.numel();
  const int64_t rows = rstd.numel();
  if (rows == 0) return;
  rmsnorm_forward_kernel<<<row_grid(rows), kRowThreads, 0, compute_stream()>>>(
      float_ref(x), float_ref(w), eps, float_ref(y), float_ref(rstd), rows, dim);
  WEFT_CUDA_LAUNCH_CHECK();
}

void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy,
                      Tensor& dx, Tensor& dw) {
  const int64_t dim = w.numel();
  const int64_t rows = rstd.numel();
  if (rows == 0) return;
  rmsnorm_backward_kernel<<<row_grid(rows), kRowThreads, 0, compute_stream()>>>(
      float_ref(x), float_ref(w), float_ref(rstd), float_ref(dy), float_ref(dx), rows, dim);
  WEFT_CUDA_LAUNCH_CHECK();
  add_column_sums(dy.view({rows, dim}), x.view({rows, dim}), rstd, dw);  // dw += sum_n dy x rstd
}

}  // namespace weft::kernels::cuda
