// Rotary position embedding, HF rotate-half convention over the whole head dim.
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"

namespace weft::kernels::cpu {

namespace {

// Rotates every head of x[B,T,H,d] by sign * angle(position, pair) and scales by
// attention_factor. Angles follow HF in f32: angle = float(p) * inv_freq_i, cos and sin of it
// times the factor, so results match PyTorch models.
void rotate(Tensor& x, const Tensor& positions, const Tensor& inv_freq, float attention_factor,
            float sign) {
  const int64_t batch = x.dim(0);
  const int64_t seq = x.dim(1);
  const int64_t heads = x.dim(2);
  const int64_t d = x.dim(3);
  const int64_t half = d / 2;
  const float* freq = inv_freq.data<float>();
  const int64_t freq_row = inv_freq.ndim() == 2 ? half : 0;  // per token, or one row for all
  // [T, d/2] each
  std::vector<float> cos_t(seq * half);
  std::vector<float> sin_t(seq * half);
  const IndexReader pos(positions);
  for (int64_t t = 0; t < seq; ++t) {
    const float p = static_cast<float>(pos[t]);
    const float* f = freq + t * freq_row;
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(p * f[i]);
      cos_t[t * half + i] = static_cast<float>(std::cos(angle)) * attention_factor;
      sin_t[t * half + i] = sign * (static_cast<float>(std::sin(angle)) * attention_factor);
    }
  }
  float* xp = x.data<float>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < seq; ++t) {
      const float* c = cos_t.data() + t * half;
      const float* s = sin_t.data() + t * half;
      for (int64_t h = 0; h < heads; ++h) {
        float* lo = xp + ((b * seq + t) * heads + h) * d;
        float* hi = lo + half;
        for (int64_t i = 0; i < half; ++i) {
          const float x0 = lo[i];
          const float x1 = hi[i];
          lo[i] = x0 * c[i] - x1 * s[i];
          hi[i] = x1 * c[i] + x0 * s[i];
        }
      }
    }
  }
}

}  // namespace

void rope_forward(Tensor& x, const Tensor& positions, const Tensor& inv_freq,
                  float attention_factor) {
  rotate(x, positions, inv_freq, attention_factor, 1.0f);
}

void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& inv_freq,
                   float attention_factor) {
  rotate(dx, positions, inv_freq, attention_factor, -1.0f);
}

}  // namespace weft::kernels::cpu
