// MoE top-k router: softmax over experts, the k largest probabilities (ties: lower expert
// first), optional renormalisation; and the backward through both. One warp per token row.
#include <climits>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace weft::kernels::cuda {
namespace {

constexpr int kRouterThreads = 128;  // 4 rows per block

// A candidate expert; `a` ranks before `b` when its probability is larger, or equal with a
// lower expert index.
struct Choice {
  float p;
  int e;
};
__device__ inline bool ranks_before(Choice a, Choice b) {
  return a.p > b.p || (a.p == b.p && a.e < b.e);
}

__global__ void topk_router_forward_kernel(FloatRef logits, int k, bool renormalize, FloatRef probs,
                                           int32_t* idx, FloatRef weights, int64_t rows,
                                           int experts) {
  const int lane = threadIdx.x % kWarp;
  for (int64_t row : warp_stride(rows)) {
    const int64_t base = row * experts;
    float m = -INFINITY;
    for (int e = lane; e < experts; e += kWarp) m = fmaxf(m, logits.load(base + e));
    m = warp_reduce(m, MaxOp());
    float s = 0.0f;
    for (int e = lane; e < experts; e += kWarp) s += expf(logits.load(base + e) - m);
    s = warp_reduce(s, SumOp());
    // Every lane computes a probability the same way, so comparisons below see equal values.
    auto prob = [&](int e) { return expf(logits.load(base + e) - m) / s; };
    for (int e = lane; e < experts; e += kWarp) probs.store(base + e, prob(e));

    // k rounds of a warp arg-max over the experts ranked after the previous pick.
    Choice previous{INFINITY, -1};
    float total = 0.0f;
    for (int r = 0; r < k; ++r) {
      Choice best{-INFINITY, INT_MAX};
      for (int e = lane; e < experts; e += kWarp) {
        const Choice c{prob(e), e};
        if (ranks_before(previous, c) && ranks_before(c, best)) best = c;
      }
      for (int offset = kWarp / 2; offset > 0; offset /= 2) {
        const Choice other{__shfl_xor_sync(kFullMask, best.p, offset),
                           __shfl_xor_sync(kFullMask, best.e, offset)};
        if (ranks_before(other, best)) best = other;
      }
      previous = best;
      total += best.p;
      if (lane == r % kWarp) idx[row * k + r] = best.e;
    }
    // Lane r % 32 wrote idx[r] above and reads it back here. A row of NaN logits picks no
    // expert (INT_MAX) and gets NaN weights.
    for (int r = lane; r < k; r += kWarp) {
      const int e = idx[row * k + r];
      const float p = e < experts ? prob(e) : NAN;
      weights.store(row * k + r, renormalize ? p / total : p);
    }
  }
}

// dp_{e_i} = dw_i (or (dw_i - sum_j dw_j w_j) / Z with Z = sum_j p_{e_j} when renormalised),
// then dlogits_e = p_e (dp_e - sum_i p_{e_i} dp_{e_i}).
__global__ void topk_router_backward_kernel(FloatRef probs, const int32_t* idx, FloatRef weights,
                                            FloatRef dweights, bool renormalize, FloatRef dlogits,
                                            int64_t rows, int k, int experts) {
  const int lane = threadIdx.x % kWarp;
  for (int64_t row : warp_stride(rows)) {
    const int64_t base = row * experts;
    const int64_t sel = row * k;
    float z = 0.0f;
    float w_dot_dw = 0.0f;
    for (int i = 0; i < k; ++i) {
      z += probs.load(base + idx[sel + i]);
      w_dot_dw += weights.load(sel + i) * dweights.load(sel + i);
    }
    auto dp_selected = [&](int i) {
      const float dw = dweights.load(sel + i);
      return renormalize ? (dw - w_dot_dw) / z : dw;
    };
    float p_dot_dp = 0.0f;
    for (int i = 0; i < k; ++i) p_dot_dp += probs.load(base + idx[sel + i]) * dp_selected(i);
    for (int e = lane; e < experts; e += kWarp) {
      float dp = 0.0f;
      for (int i = 0; i < k; ++i) {
        if (idx[sel + i] == e) dp += dp_selected(i);
      }
      dlogits.store(base + e, probs.load(base + e) * (dp - p_dot_dp));
    }
  }
}

}  // namespace

void topk_router_forward(const Tensor& logits, int k, bool renormalize, Tensor& probs, Tensor& idx,
                         Tensor& weights) {
  const int64_t rows = logits.dim(0);
  if (rows == 0) return;
  topk_router_forward_kernel<<<warp_grid_for(rows, kRouterThreads), kRouterThreads, 0,
                               compute_stream()>>>(
      float_ref(logits), k, renormalize, float_ref(probs), idx.data<int32_t>(), float_ref(weights),
      rows, static_cast<int>(logits.dim(1)));
  WEFT_CUDA_LAUNCH_CHECK();
}

void topk_router_backward(const Tensor& probs, const Tensor& idx, const Tensor& weights,
                          const Tensor& dweights, bool renormalize, Tensor& dlogits) {
  const int64_t rows = probs.dim(0);
  if (rows == 0) return;
  topk_router_backward_kernel<<<warp_grid_for(rows, kRouterThreads), kRouterThreads, 0,
                                compute_stream()>>>(
      float_ref(probs), idx.data<int32_t>(), float_ref(weights), float_ref(dweights), renormalize,
      float_ref(dlogits), rows, static_cast<int>(idx.dim(1)), static_cast<int>(probs.dim(1)));
  WEFT_CUDA_LAUNCH_CHECK();
}

}  // namespace weft::kernels::cuda
