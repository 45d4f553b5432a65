// Rotary embedding (HF rotate-half over the whole head dim), in place on x[B,T,H,d].
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace weft::kernels::cuda {
namespace {

// Rotates each pair (x_i, x_{i+d/2}) by `direction` * angle, angle = p * inv_freq_i in f32 as
// Hugging Face does, and scales it by attention_factor (cos and sin both). inv_freq holds one row
// of d/2 for every token (freq_row 0) or a row per token (freq_row d/2).
__global__ void rope_kernel(FloatRef x, IndexRef positions, const float* inv_freq, int64_t freq_row,
                            float attention_factor, float direction, int64_t seq, int64_t heads,
                            int64_t head_dim, int64_t pairs) {
  const int64_t half = head_dim / 2;
  for (int64_t idx : grid_stride(pairs)) {
    const int64_t i = idx % half;
    const int64_t row = idx / half;  // flat (b, t, h)
    const int64_t t = (row / heads) % seq;
    const float angle = static_cast<float>(positions.load(t)) * inv_freq[t * freq_row + i];
    const float c = cosf(angle) * attention_factor;
    const float s = direction * (sinf(angle) * attention_factor);
    const int64_t lo = row * head_dim + i;
    const int64_t hi = lo + half;
    const float x1 = x.load(lo);
    const float x2 = x.load(hi);
    x.store(lo, x1 * c - x2 * s);
    x.store(hi, x2 * c + x1 * s);
  }
}

void rope(Tensor& x, const Tensor& positions, const Tensor& inv_freq, float attention_factor,
          float direction) {
  const int64_t seq = x.dim(1);
  const int64_t heads = x.dim(2);
  const int64_t head_dim = x.dim(3);
  const int64_t pairs = x.numel() / 2;
  if (pairs == 0) return;
  const int64_t freq_row = inv_freq.ndim() == 2 ? head_dim / 2 : 0;
  rope_kernel<<<grid_for(pairs, kThreads), kThreads, 0, compute_stream()>>>(
      float_ref(x), index_ref(positions), inv_freq.data<float>(), freq_row, attention_factor,
      direction, seq, heads, head_dim, pairs);
  WEFT_CUDA_LAUNCH_CHECK();
}

}  // namespace

void rope_forward(Tensor& x, const Tensor& positions, const Tensor& inv_freq,
                  float attention_factor) {
  rope(x, positions, inv_freq, attention_factor, 1.0f);
}

void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& inv_freq,
                   float attention_factor) {
  rope(dx, positions, inv_freq, attention_factor, -1.0f);
}

}  // namespace weft::kernels::cuda
