// SwiGLU: h = silu(gate) * up, and its backward.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace weft::kernels::cuda {
namespace {

__device__ inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void swiglu_forward_kernel(FloatRef gate, FloatRef up, FloatRef h, int64_t n) {
  for (int64_t i : grid_stride(n)) {
    const float g = gate.load(i);
    h.store(i, g * sigmoid(g) * up.load(i));
  }
}

// d silu(g)/dg = sig(g) (1 + g (1 - sig(g))).
__global__ void swiglu_backward_kernel(FloatRef gate, FloatRef up, FloatRef dh, FloatRef dgate,
                                       FloatRef dup, int64_t n) {
  for (int64_t i : grid_stride(n)) {
    const float g = gate.load(i);
    const float s = sigmoid(g);
    const float d = dh.load(i);
    dgate.store(i, d * up.load(i) * s * (1.0f + g * (1.0f - s)));
    dup.store(i, d * g * s);
  }
}

}  // namespace

void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& h) {
  const int64_t n = h.numel();
  if (n == 0) return;
  swiglu_forward_kernel<<<grid_for(n, kThreads), kThreads, 0, compute_stream()>>>(
      float_ref(gate), float_ref(up), float_ref(h), n);
  WEFT_CUDA_LAUNCH_CHECK();
}

void swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dh, Tensor& dgate,
                     Tensor& dup) {
  const int64_t n = dh.numel();
  if (n == 0) return;
  swiglu_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, compute_stream()>>>(
      float_ref(gate), float_ref(up), float_ref(dh), float_ref(dgate), float_ref(dup), n);
  WEFT_CUDA_LAUNCH_CHECK();
}

}  // namespace weft::kernels::cuda
