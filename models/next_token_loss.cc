#include "models/next_token_loss.h"

#include <cmath>
#include <vector>

#include "kernels/ops.h"

namespace weft::models {

namespace {

// Local row lse [N] -> the log-sum-exp over the whole vocabulary, in place. On the host: N
// floats, copied from and back to a GPU (in place on the CPU path).
void combine_lse(comm::Communicator& tp, Tensor& lse) {
  Tensor host = lse.host();       // [N]
  Tensor row_max = host.clone();  // [N]
  tp.all_reduce(row_max, comm::ReduceOp::kMax);
  const int64_t n = host.numel();
  float* l = host.data<float>();
  const float* m = row_max.data<float>();
  for (int64_t i = 0; i < n; ++i) l[i] = std::exp(l[i] - m[i]);  // sum_r exp(lse_r - max)
  tp.all_reduce(host);
  for (int64_t i = 0; i < n; ++i) l[i] = m[i] + std::log(l[i]);
  if (!lse.is_host()) lse.copy_from(host);
}

}  // namespace

Tensor next_token_targets(const Tensor& tokens) {
  const int64_t b = tokens.dim(0), t = tokens.dim(1);
  const std::vector<int64_t> ids = tokens.to_ints();
  std::vector<int64_t> targets(b * t);  // [B*T]
  for (int64_t i = 0; i < b * t; ++i) targets[i] = (i % t == t - 1) ? -1 : ids[i + 1];
  return Tensor::from_ints(targets, {b * t}).on(default_device());
}

double cross_entropy_sum(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                         comm::Communicator* tp, Tensor& lse) {
  const int64_t n = logits.dim(0);
  Tensor target_logit = Tensor::empty({n});  // [N]; 0 where the target is another rank's
  kernels::cross_entropy_forward(logits, targets, vocab_start, lse, target_logit);
  if (tp != nullptr && tp->size() > 1) {
    combine_lse(*tp, lse);
    tp->all_reduce(target_logit);
  }
  const std::vector<int64_t> label = targets.to_ints();
  const std::vector<float> l = lse.to_floats(), tl = target_logit.to_floats();
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (label[i] >= 0) sum += static_cast<double>(l[i]) - tl[i];
  }
  return sum;
}

void cross_entropy_grad(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                        const Tensor& lse, float loss_scale, Tensor& dlogits) {
  Tensor row_scale = Tensor::full({logits.dim(0)}, loss_scale);  // [N]; unlabelled rows get 0
  kernels::cross_entropy_backward(logits, targets, vocab_start, lse, row_scale, dlogits);
}

}  // namespace weft::models
