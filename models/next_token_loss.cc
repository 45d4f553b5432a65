#include "models/next_token_loss.h"

#include <vector>

#include "kernels/ops.h"

namespace weft::models {

Tensor next_token_targets(const Tensor& tokens) {
  const int64_t b = tokens.dim(0), t = tokens.dim(1);
  const std::vector<int64_t> ids = tokens.to_ints();
  Tensor targets = Tensor::empty({b * t}, DType::kI64);  // [B*T]
  int64_t* p = targets.data<int64_t>();
  for (int64_t i = 0; i < b * t; ++i) p[i] = (i % t == t - 1) ? -1 : ids[i + 1];
  return targets;
}

double cross_entropy_sum(const Tensor& logits, const Tensor& targets, Tensor& lse) {
  const int64_t n = logits.dim(0);
  Tensor target_logit = Tensor::empty({n});  // [N]
  kernels::cross_entropy_forward(logits, targets, 0, lse, target_logit);
  const std::vector<int64_t> label = targets.to_ints();
  const std::vector<float> l = lse.to_floats(), tl = target_logit.to_floats();
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (label[i] >= 0) sum += static_cast<double>(l[i]) - tl[i];
  }
  return sum;
}

void cross_entropy_grad(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                        float loss_scale, Tensor& dlogits) {
  Tensor row_scale = Tensor::full({logits.dim(0)}, loss_scale);  // [N]; unlabelled rows get 0
  kernels::cross_entropy_backward(logits, targets, 0, lse, row_scale, dlogits);
}

}  // namespace weft::models
