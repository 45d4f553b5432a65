// SwiGLU: h = silu(gate) * up, silu(x) = x * sigmoid(x).
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"

namespace weft::kernels::cpu {

namespace {

[[gnu::always_inline]] inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

WEFT_CPU_CLONES void swiglu_forward_loop(const float* gate, const float* up, int64_t n, float* h) {
  for (int64_t i = 0; i < n; ++i) h[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

// d silu(x)/dx = s (1 + x (1 - s)) with s = sigmoid(x).
WEFT_CPU_CLONES void swiglu_backward_loop(const float* gate, const float* up, const float* dh,
                                          int64_t n, float* dgate, float* dup) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = gate[i];
    const float s = sigmoid(x);
    dup[i] = dh[i] * x * s;
    dgate[i] = dh[i] * up[i] * s * (1.0f + x * (1.0f - s));
  }
}

}  // namespace

void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& h) {
  swiglu_forward_loop(gate.data<float>(), up.data<float>(), gate.numel(), h.data<float>());
}

void swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dh, Tensor& dgate,
                     Tensor& dup) {
  swiglu_backward_loop(gate.data<float>(), up.data<float>(), dh.data<float>(), gate.numel(),
                       dgate.data<float>(), dup.data<float>());
}

}  // namespace weft::kernels::cpu
