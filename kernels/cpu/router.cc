// MoE top-k router: softmax over experts, the k largest probabilities (ties: lower expert
// first), optionally renormalised to sum to one.
#include <algorithm>
#include <numeric>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"

namespace weft::kernels::cpu {

void topk_router_forward(const Tensor& logits, int k, bool renormalize, Tensor& probs, Tensor& idx,
                         Tensor& weights) {
  const int64_t rows = logits.dim(0);
  const int64_t experts = logits.dim(1);
  const float* lp = logits.data<float>();
  float* pp = probs.data<float>();
  int32_t* ip = idx.data<int32_t>();
  float* wp = weights.data<float>();
  std::vector<int32_t> order(experts);
  for (int64_t n = 0; n < rows; ++n) {
    float* p = pp + n * experts;
    std::copy(lp + n * experts, lp + (n + 1) * experts, p);
    softmax_prefix(p, experts, experts);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [p](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) sum += p[order[j]];
    const float norm = renormalize ? 1.0f / sum : 1.0f;
    for (int j = 0; j < k; ++j) {
      ip[n * k + j] = order[j];
      wp[n * k + j] = p[order[j]] * norm;
    }
  }
}

// With renormalisation w_i = p_i / S over the chosen experts: dp_i = (dw_i - sum_j dw_j w_j) / S;
// without it dp_i = dw_i. Unchosen experts get dp = 0; then the softmax backward.
void topk_router_backward(const Tensor& probs, const Tensor& idx, const Tensor& weights,
                          const Tensor& dweights, bool renormalize, Tensor& dlogits) {
  const int64_t rows = probs.dim(0);
  const int64_t experts = probs.dim(1);
  const int64_t k = idx.dim(1);
  const float* pp = probs.data<float>();
  const int32_t* ip = idx.data<int32_t>();
  const float* wp = weights.data<float>();
  const float* dwp = dweights.data<float>();
  float* dlp = dlogits.data<float>();
  std::vector<float> dp(experts);
  for (int64_t n = 0; n < rows; ++n) {
    const float* p = pp + n * experts;
    const int32_t* chosen = ip + n * k;
    const float* w = wp + n * k;
    const float* dw = dwp + n * k;
    std::fill(dp.begin(), dp.end(), 0.0f);
    float shift = 0.0f;
    float inv_sum = 1.0f;
    if (renormalize) {
      float sum = 0.0f;
      for (int64_t j = 0; j < k; ++j) {
        shift += dw[j] * w[j];
        sum += p[chosen[j]];
      }
      inv_sum = 1.0f / sum;
    }
    for (int64_t j = 0; j < k; ++j) dp[chosen[j]] = (dw[j] - shift) * inv_sum;
    softmax_backward_row(p, dp.data(), experts, dlp + n * experts);
  }
}

}  // namespace weft::kernels::cpu
