#include "runtime/train/optimizer.h"

#include <cmath>

namespace weft::train {

AdamW::AdamW(std::vector<models::Param*> params, kernels::AdamWConfig config)
    : params_(std::move(params)), config_(config) {
  for (models::Param* p : params_) {
    m_.push_back(Tensor::zeros(p->value.shape()));
    v_.push_back(Tensor::zeros(p->value.shape()));
  }
}

void AdamW::step(int64_t step) {
  for (size_t i = 0; i < params_.size(); ++i) {
    models::Param& p = *params_[i];
    kernels::AdamWConfig cfg = config_;
    if (!p.decays()) cfg.weight_decay = 0.0f;
    kernels::adamw_step(p.value, p.grad, m_[i], v_[i], cfg, step);
  }
}

double clip_grad_norm(const std::vector<models::Param*>& params, double clip) {
  double sum = 0;
  for (const models::Param* p : params) sum += kernels::sum_squares(p->grad);
  const double norm = std::sqrt(sum);
  if (clip > 0 && norm > clip) {
    const float factor = static_cast<float>(clip / (norm + 1e-6));
    for (models::Param* p : params) kernels::scale_(p->grad, factor);
  }
  return norm;
}

}  // namespace weft::train
