// AdamW over a model's parameters, as torch.optim.AdamW (DESIGN.md): weight decay only on
// parameters with two or more dimensions, optional global-norm gradient clipping.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/ops.h"
#include "models/param.h"

namespace weft::train {

class AdamW {
 public:
  AdamW(std::vector<models::Param*> params, kernels::AdamWConfig config);

  // One update with the gradients now in the params; `step` counts from 1.
  void step(int64_t step);

  [[nodiscard]] const kernels::AdamWConfig& config() const { return config_; }
  void set_lr(float lr) { config_.lr = lr; }
  // First and second moments, parallel to the params (for checkpoints).
  [[nodiscard]] std::vector<Tensor>& exp_avg() { return m_; }
  [[nodiscard]] std::vector<Tensor>& exp_avg_sq() { return v_; }

 private:
  std::vector<models::Param*> params_;
  kernels::AdamWConfig config_;
  std::vector<Tensor> m_;
  std::vector<Tensor> v_;
};

// sqrt(sum of squares) over all grads; with `clip` > 0 scales every grad by
// min(1, clip / (norm + 1e-6)) as torch.nn.utils.clip_grad_norm_ does. Returns the norm before
// clipping.
double clip_grad_norm(const std::vector<models::Param*>& params, double clip);

}  // namespace weft::train
