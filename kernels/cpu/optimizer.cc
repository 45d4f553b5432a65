// AdamW as torch.optim.AdamW computes it (decoupled weight decay, bias corrections).
#include <cmath>

#include "kernels/cpu/cpu_ops.h"

namespace weft::kernels::cpu {

void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& cfg,
                int64_t step) {
  const double bc1 = 1.0 - std::pow(double{cfg.beta1}, step);
  const float step_size = static_cast<float>(cfg.lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(double{cfg.beta2}, step)));
  const float decay = 1.0f - cfg.lr * cfg.weight_decay;
  const float b1 = cfg.beta1;
  const float b2 = cfg.beta2;
  float* p = param.data<float>();
  const float* g = grad.data<float>();
  float* mp = m.data<float>();
  float* vp = v.data<float>();
  const int64_t n = param.numel();
  for (int64_t i = 0; i < n; ++i) {
    mp[i] = b1 * mp[i] + (1.0f - b1) * g[i];
    vp[i] = b2 * vp[i] + (1.0f - b2) * g[i] * g[i];
    const float denom = std::sqrt(vp[i]) / bc2_sqrt + cfg.eps;
    p[i] = p[i] * decay - step_size * mp[i] / denom;
  }
}

}  // namespace weft::kernels::cpu
