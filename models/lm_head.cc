#include "models/lm_head.h"

#include "kernels/ops.h"
#include "models/param_init.h"

namespace weft::models {

LmHead::LmHead(int64_t vocab, int64_t hidden, const TpShard& shard, Weight weight, Param* tied)
    : weight_(tied) {
  if (weight == Weight::kTied) return;
  const bool copy = weight == Weight::kTiedCopy;
  own_ = new_sharded_param(copy ? "model.embed_tokens.weight" : "lm_head.weight", {vocab, hidden},
                           0, shard);
  if (copy) own_.spec.replica = 1;
  weight_ = &own_;
}

Tensor LmHead::forward(const Tensor& x) const {
  Tensor logits = Tensor::empty({x.dim(0), weight_->value.dim(0)});  // [N, V]
  kernels::linear_forward(x, weight_->value, nullptr, logits);
  return logits;
}

Tensor LmHead::backward(const Tensor& x, const Tensor& dlogits) {
  Tensor dx = Tensor::empty(x.shape());  // [N, D]
  kernels::linear_backward(x, weight_->value, dlogits, &dx, &weight_->grad, nullptr);
  return dx;
}

void LmHead::collect_params(std::vector<Param*>& out) {
  if (weight_ == &own_) out.push_back(&own_);
}

}  // namespace weft::models
