// Rotary embedding (HF rotate-half over the whole head dim), in place on x[B,T,H,d].
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace weft::kernels::cuda {
namespace {

// Rotates each pair (x_i, x_{i+d/2}) by `direction` * angle, angle = p * theta^(-2i/d), computed
// in f32 as Hugging Face does (inv_freq = 1 / theta^(2i/d), then p * inv_freq).
__global__ void rope_kernel(FloatRef x, IndexRef positions, float theta, float direction,
                            int64_t seq, int64_t heads, int64_t head_dim, int64_t pairs) {
  const int64_t half = head_dim / 2;
  for (int64_t idx : grid_stride(pairs)) {
    const int64_t i = idx % half;
    const int64_t row = idx / half;  // flat (b, t, h)
    const int64_t t = (row / heads) % seq;
    const float inv_freq =
        1.0f / powf(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
    const float angle = static_cast<float>(positions.load(t)) * inv_freq;
    const float c = cosf(angle);
    const float s = direction * sinf(angle);
    const int64_t lo = row * head_dim + i;
    const int64_t hi = lo + half;
    const float x1 = x.load(lo);
    const float x2 = x.load(hi);
    x.store(lo, x1 * c - x2 * s);
    x.store(hi, x2 * c + x1 * s);
  }
}

void rope(Tensor& x, const Tensor& positions, float theta, float direction) {
  const int64_t seq = x.dim(1);
  const int64_t heads = x.dim(2);
  const int64_t head_dim = x.dim(3);
  const int64_t pairs = x.numel() / 2;
  if (pairs == 0) return;
  rope_kernel<<<grid_for(pairs, kThreads), kThreads, 0, compute_stream()>>>(
      float_ref(x), index_ref(positions), theta, direction, seq, heads, head_dim, pairs);
  WEFT_CUDA_LAUNCH_CHECK();
}

}  // namespace

void rope_forward(Tensor& x, const Tensor& positions, float theta) {
  rope(x, positions, theta, 1.0f);
}

void rope_backward(Tensor& dx, const Tensor& positions, float theta) {
  rope(dx, positions, theta, -1.0f);
}

}  // namespace weft::kernels::cuda
