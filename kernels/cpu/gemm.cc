// GEMM and the linear layer (HF weight layout w[out, in]) on OpenBLAS.
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/ops.h"

namespace weft::kernels::cpu {

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
          float beta) {
  const int64_t m = c.dim(0);
  const int64_t n = c.dim(1);
  const int64_t k = trans_a ? a.dim(0) : a.dim(1);
  sgemm(trans_a, trans_b, m, n, k, alpha, a.data<float>(), a.dim(1), b.data<float>(), b.dim(1),
        beta, c.data<float>(), n);
}

namespace {

// y[rows, out] = x @ w^T (+ bias) in one BLAS call.
void linear_rows(const float* x, int64_t rows, int64_t in, const float* w, int64_t out,
                 const float* bias, float* y) {
  if (bias != nullptr) {
    for (int64_t i = 0; i < rows; ++i) std::copy(bias, bias + out, y + i * out);
  }
  sgemm(false, true, rows, out, in, 1.0f, x, in, w, in, bias != nullptr ? 1.0f : 0.0f, y, out);
}

}  // namespace

void linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  const int64_t rows = x.dim(0);
  const int64_t in = x.dim(1);
  const int64_t out = w.dim(0);
  const float* xp = x.data<float>();
  const float* wp = w.data<float>();
  const float* bp = bias != nullptr ? bias->data<float>() : nullptr;
  float* yp = y.data<float>();
  if (!batch_invariant()) {
    linear_rows(xp, rows, in, wp, out, bp, yp);
    return;
  }
  // Whole tiles in place; the last partial tile through a zero-padded copy.
  constexpr int64_t kTile = kInvariantRows;
  const int64_t whole = rows / kTile * kTile;
  for (int64_t r = 0; r < whole; r += kTile) {
    linear_rows(xp + r * in, kTile, in, wp, out, bp, yp + r * out);
  }
  if (whole == rows) return;
  const int64_t left = rows - whole;
  std::vector<float> xt(kTile * in, 0.0f), yt(kTile * out);
  std::copy(xp + whole * in, xp + rows * in, xt.data());
  linear_rows(xt.data(), kTile, in, wp, out, bp, yt.data());
  std::copy(yt.data(), yt.data() + left * out, yp + whole * out);
}

void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                     Tensor* db) {
  const int64_t rows = x.dim(0);
  const int64_t in = x.dim(1);
  const int64_t out = w.dim(0);
  const float* dyp = dy.data<float>();
  if (dx != nullptr) {
    sgemm(false, false, rows, in, out, 1.0f, dyp, out, w.data<float>(), in, 0.0f, dx->data<float>(),
          in);
  }
  if (dw != nullptr) {
    sgemm(true, false, out, in, rows, 1.0f, dyp, out, x.data<float>(), in, 1.0f, dw->data<float>(),
          in);
  }
  if (db != nullptr) {
    float* dbp = db->data<float>();
    for (int64_t i = 0; i < rows; ++i) {
      const float* row = dyp + i * out;
      for (int64_t j = 0; j < out; ++j) dbp[j] += row[j];
    }
  }
}

}  // namespace weft::kernels::cpu
