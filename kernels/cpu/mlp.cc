// SwiGLU: h = silu(gate) * up, silu(x) = x * sigmoid(x).
#include <cmath>

#include "kernels/cpu/cpu_ops.h"

namespace weft::kernels::cpu {

namespace {
float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
}  // namespace

void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& h) {
  const float* gp = gate.data<float>();
  const float* up_ = up.data<float>();
  float* hp = h.data<float>();
  const int64_t n = gate.numel();
  for (int64_t i = 0; i < n; ++i) hp[i] = gp[i] * sigmoid(gp[i]) * up_[i];
}

// d silu(x)/dx = s (1 + x (1 - s)) with s = sigmoid(x).
void swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dh, Tensor& dgate,
                     Tensor& dup) {
  const float* gp = gate.data<float>();
  const float* upp = up.data<float>();
  const float* dhp = dh.data<float>();
  float* dgp = dgate.data<float>();
  float* dup_ = dup.data<float>();
  const int64_t n = gate.numel();
  for (int64_t i = 0; i < n; ++i) {
    const float x = gp[i];
    const float s = sigmoid(x);
    dup_[i] = dhp[i] * x * s;
    dgp[i] = dhp[i] * upp[i] * s * (1.0f + x * (1.0f - s));
  }
}

}  // namespace weft::kernels::cpu
