// The GEMMs and linear layers (ops.h), and the process-wide numerics modes they honour: bf16
// compute and batch invariance.
#include <atomic>

#include "kernels/ops.h"
#include "kernels/ops_check.h"
#ifdef WEFT_HAVE_CUDA
#include "kernels/cuda/internal.h"
#endif

namespace weft::kernels {

using detail::bf16_input;
using detail::bf16_output;
using detail::Check;
using detail::rows_of;

namespace {

std::atomic<bool> g_batch_invariant{false};
std::atomic<bool> g_bf16_compute{false};

// Whether bf16 mode rounds `t`: an f32 tensor, in bf16 mode.
bool bf16_rounds(const Tensor& t) {
  return g_bf16_compute.load(std::memory_order_relaxed) && t.defined() && t.dtype() == DType::kF32;
}

#ifdef WEFT_HAVE_CUDA
// A bf16 copy of an f32 CUDA tensor.
Tensor cuda_bf16(const Tensor& t) {
  Tensor half = Tensor::empty(t.shape(), DType::kBF16, t.device());
  cuda::cast_into(t, half);
  return half;
}
#endif

}  // namespace

namespace detail {

void bf16_output(Tensor& t) {
  if (!bf16_rounds(t)) return;
  if (t.is_cpu()) {
    DeviceAccess access;  // a rounding kernel
    float* v = t.data<float>();
    const int64_t n = t.numel();
    for (int64_t i = 0; i < n; ++i) v[i] = bf16_to_f32(f32_to_bf16(v[i]));
    return;
  }
#ifdef WEFT_HAVE_CUDA
  cuda::cast_into(cuda_bf16(t), t);
#endif
}

// On CUDA the bf16 tensor goes to cuBLASLt, which multiplies it on the tensor cores with f32
// accumulation.
Tensor bf16_input(const Tensor& t) {
  if (!bf16_rounds(t)) return t;
  if (t.is_cpu()) {
    Tensor r = t.clone();
    bf16_output(r);
    return r;
  }
#ifdef WEFT_HAVE_CUDA
  return cuda_bf16(t);
#else
  return t;
#endif
}

}  // namespace detail

void set_bf16_compute(bool on) { g_bf16_compute.store(on, std::memory_order_relaxed); }
bool bf16_compute() { return g_bf16_compute.load(std::memory_order_relaxed); }

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
          float beta) {
  const Check ck("gemm");
  const Device dev = ck.device({&a, &b, &c});
  ck.floating("a", a).ndim("a", a, 2).floating("b", b).ndim("b", b, 2);
  ck.floating("c", c).ndim("c", c, 2);
  const int64_t m = trans_a ? a.dim(1) : a.dim(0);
  const int64_t k = trans_a ? a.dim(0) : a.dim(1);
  const int64_t kb = trans_b ? b.dim(1) : b.dim(0);
  const int64_t n = trans_b ? b.dim(0) : b.dim(1);
  ck.that(k == kb, "inner dimensions differ: op(a) is " + shape_str({m, k}) + ", op(b) is " +
                       shape_str({kb, n}));
  ck.shape("c", c, {m, n});
  const Tensor ar = bf16_input(a), br = bf16_input(b);
  WEFT_DISPATCH(dev, gemm, ar, trans_a, br, trans_b, c, alpha, beta);
}

void set_batch_invariant(bool on) { g_batch_invariant.store(on, std::memory_order_relaxed); }
bool batch_invariant() { return g_batch_invariant.load(std::memory_order_relaxed); }

namespace {

// The shape of x [..., in] through w [out, in]: [..., out] (checks x's last dimension).
Shape linear_output_shape(const Check& ck, const Tensor& x, const Tensor& w) {
  ck.that(x.ndim() >= 1 && x.dim(-1) == w.dim(1),
          "x is " + shape_str(x.shape()) + ", expected [..., " + std::to_string(w.dim(1)) + "]");
  Shape shape = x.shape();
  shape.back() = w.dim(0);
  return shape;
}

}  // namespace

void linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  const Check ck("linear_forward");
  const Device dev = ck.device({&x, &w, bias, &y});
  ck.floating("w", w).ndim("w", w, 2).floating("x", x).floating("y", y);
  ck.shape("y", y, linear_output_shape(ck, x, w));
  if (bias != nullptr) ck.floating("bias", *bias).shape("bias", *bias, {w.dim(0)});
  Tensor x2 = bf16_input(rows_of(x));
  Tensor y2 = rows_of(y);
  const Tensor wr = bf16_input(w);
  const Tensor br = bias != nullptr ? bf16_input(*bias) : Tensor();
  WEFT_DISPATCH(dev, linear_forward, x2, wr, bias != nullptr ? &br : nullptr, y2);
  bf16_output(y2);
}

void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                     Tensor* db) {
  const Check ck("linear_backward");
  const Device dev = ck.device({&x, &w, &dy, dx, dw, db});
  ck.floating("w", w).ndim("w", w, 2).floating("x", x).floating("dy", dy);
  ck.shape("dy", dy, linear_output_shape(ck, x, w));
  if (dx != nullptr) ck.floating("dx", *dx).shape("dx", *dx, x.shape());
  if (dw != nullptr) ck.floating("dw", *dw).shape("dw", *dw, w.shape());
  if (db != nullptr) ck.floating("db", *db).shape("db", *db, {w.dim(0)});
  const Tensor x2 = bf16_input(rows_of(x));
  const Tensor dy2 = bf16_input(rows_of(dy));
  const Tensor wr = bf16_input(w);
  Tensor dx2 = dx != nullptr ? rows_of(*dx) : Tensor();
  // dw and db accumulate in f32 (the master gradients); dx is an activation gradient: bf16.
  WEFT_DISPATCH(dev, linear_backward, x2, wr, dy2, dx != nullptr ? &dx2 : nullptr, dw, db);
  if (dx != nullptr) bf16_output(dx2);
}

}  // namespace weft::kernels
