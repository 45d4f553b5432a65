// Elementwise arithmetic, dtype casts, bias rows, column sums and the sum of squares.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/internal.h"

namespace weft::kernels::cuda {
namespace {

// out[i] = alpha * a[i] + beta * b[i] + constant; a null operand contributes nothing (and is
// not read), so one kernel serves add, add_, scale_, fill_ and casts.
__global__ void combine_kernel(FloatRef out, FloatRef a, float alpha, FloatRef b, float beta,
                               float constant, int64_t n) {
  for (int64_t i : grid_stride(n)) {
    float v = constant;
    if (a.data != nullptr) v += alpha * a.load(i);
    if (b.data != nullptr) v += beta * b.load(i);
    out.store(i, v);
  }
}

void combine(const Tensor& out, FloatRef a, float alpha, FloatRef b, float beta, float constant) {
  const int64_t n = out.numel();
  if (n == 0) return;
  combine_kernel<<<grid_for(n, kThreads), kThreads, 0, compute_stream()>>>(float_ref(out), a, alpha,
                                                                           b, beta, constant, n);
  WEFT_CUDA_LAUNCH_CHECK();
}

// a[i] = b[i] * a[i] + c[i].
__global__ void mul_add_kernel(FloatRef a, FloatRef b, FloatRef c, int64_t n) {
  for (int64_t i : grid_stride(n)) a.store(i, b.load(i) * a.load(i) + c.load(i));
}

// y[N,C] += bias[C].
__global__ void bias_rows_kernel(FloatRef y, FloatRef bias, int64_t cols, int64_t n) {
  for (int64_t i : grid_stride(n)) {
    y.store(i, y.load(i) + bias.load(i % cols));
  }
}

// Column sums over a band of rows per block (grid.y bands), added atomically into f32 sums.
__global__ void column_sums_kernel(FloatRef dy, FloatRef x, FloatRef rstd, float* sums,
                                   int64_t rows, int64_t cols, int64_t rows_per_band) {
  const int64_t col = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (col >= cols) return;
  const int64_t begin = blockIdx.y * rows_per_band;
  const int64_t end = min(rows, begin + rows_per_band);
  float acc = 0.0f;
  for (int64_t r = begin; r < end; ++r) {
    float v = dy.load(r * cols + col);
    if (x.data != nullptr) v *= x.load(r * cols + col) * rstd.load(r);
    acc += v;
  }
  atomicAdd(sums + col, acc);
}

// Per-thread partial sums in double, one atomic per warp.
__global__ void sum_squares_kernel(FloatRef a, int64_t n, double* result) {
  double acc = 0.0;
  for (int64_t i : grid_stride(n)) {
    const double v = a.load(i);
    acc += v * v;
  }
  acc = warp_reduce(acc, SumOp());
  if (threadIdx.x % kWarp == 0) atomicAdd(result, acc);
}

}  // namespace

void add(const Tensor& a, const Tensor& b, Tensor& out) {
  combine(out, float_ref(a), 1.0f, float_ref(b), 1.0f, 0.0f);
}

void add_(Tensor& a, const Tensor& b, float alpha) {
  combine(a, float_ref(a), 1.0f, float_ref(b), alpha, 0.0f);
}

void mul_add_(Tensor& a, const Tensor& b, const Tensor& c) {
  const int64_t n = a.numel();
  if (n == 0) return;
  mul_add_kernel<<<grid_for(n, kThreads), kThreads, 0, compute_stream()>>>(
      float_ref(a), float_ref(b), float_ref(c), n);
  WEFT_CUDA_LAUNCH_CHECK();
}

void scale_(Tensor& a, float alpha) { combine(a, float_ref(a), alpha, FloatRef{}, 0.0f, 0.0f); }

void fill_(Tensor& a, float value) { combine(a, FloatRef{}, 0.0f, FloatRef{}, 0.0f, value); }

void cast_into(const Tensor& src, Tensor& dst) {
  WEFT_CHECK_EQ(src.numel(), dst.numel()) << src.str() << " -> " << dst.str();
  combine(dst, float_ref(src), 1.0f, FloatRef{}, 0.0f, 0.0f);
}

double sum_squares(const Tensor& a) {
  const int64_t n = a.numel();
  if (n == 0) return 0.0;
  // 8 zero bytes on the device: the double accumulator (Tensor has no f64 dtype).
  Tensor acc = Tensor::zeros({1}, DType::kI64, a.device());
  auto* result = static_cast<double*>(acc.raw());
  sum_squares_kernel<<<grid_for(n, kThreads), kThreads, 0, compute_stream()>>>(float_ref(a), n,
                                                                               result);
  WEFT_CUDA_LAUNCH_CHECK();
  double host = 0.0;
  copy_bytes(&host, Device::cpu(), result, a.device(), sizeof(double));
  return host;
}

void add_bias_rows(Tensor& y, const Tensor& bias) {
  const int64_t n = y.numel();
  if (n == 0) return;
  bias_rows_kernel<<<grid_for(n, kThreads), kThreads, 0, compute_stream()>>>(
      float_ref(y), float_ref(bias), bias.numel(), n);
  WEFT_CUDA_LAUNCH_CHECK();
}

void add_column_sums(const Tensor& dy, const Tensor& x, const Tensor& rstd, Tensor& out) {
  const int64_t cols = out.numel();
  const int64_t rows = cols == 0 ? 0 : dy.numel() / cols;
  if (rows == 0 || cols == 0) return;
  Tensor sums = Tensor::zeros({cols}, DType::kF32, dy.device());  // [C] f32
  const int64_t rows_per_band = std::max<int64_t>(64, (rows + 65534) / 65535);
  const dim3 grid(static_cast<unsigned>((cols + kThreads - 1) / kThreads),
                  static_cast<unsigned>((rows + rows_per_band - 1) / rows_per_band));
  column_sums_kernel<<<grid, kThreads, 0, compute_stream()>>>(
      float_ref(dy), optional_float_ref(x), optional_float_ref(rstd), sums.data<float>(), rows,
      cols, rows_per_band);
  WEFT_CUDA_LAUNCH_CHECK();
  add_(out, sums, 1.0f);
}

}  // namespace weft::kernels::cuda
