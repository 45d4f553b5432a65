// One AdamW step (torch.optim.AdamW semantics), elementwise.
#include <cmath>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace weft::kernels::cuda {
namespace {

struct AdamWStep {
  float decay;  // 1 - lr * weight_decay
  float beta1;
  float beta2;
  float step_size;  // lr / (1 - beta1^t)
  float sqrt_c2;    // sqrt(1 - beta2^t)
  float eps;
};

__global__ void adamw_kernel(FloatRef param, FloatRef grad, FloatRef m, FloatRef v, AdamWStep s,
                             int64_t n) {
  for (int64_t i : grid_stride(n)) {
    const float g = grad.load(i);
    const float mi = s.beta1 * m.load(i) + (1.0f - s.beta1) * g;
    const float vi = s.beta2 * v.load(i) + (1.0f - s.beta2) * g * g;
    m.store(i, mi);
    v.store(i, vi);
    const float p = param.load(i) * s.decay;
    param.store(i, p - s.step_size * mi / (sqrtf(vi) / s.sqrt_c2 + s.eps));
  }
}

}  // namespace

void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& cfg,
                int64_t step) {
  const int64_t n = param.numel();
  if (n == 0) return;
  // Bias corrections in double, as PyTorch computes them on the host.
  const double c1 = 1.0 - std::pow(static_cast<double>(cfg.beta1), static_cast<double>(step));
  const double c2 = 1.0 - std::pow(static_cast<double>(cfg.beta2), static_cast<double>(step));
  const AdamWStep s{
      1.0f - cfg.lr * cfg.weight_decay,  cfg.beta1, cfg.beta2, static_cast<float>(cfg.lr / c1),
      static_cast<float>(std::sqrt(c2)), cfg.eps};
  adamw_kernel<<<grid_for(n, kThreads), kThreads, 0, compute_stream()>>>(
      float_ref(param), float_ref(grad), float_ref(m), float_ref(v), s, n);
  WEFT_CUDA_LAUNCH_CHECK();
}

}  // namespace weft::kernels::cuda
