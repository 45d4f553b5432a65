// Row-wise softmax and the (vocabulary-parallel) cross-entropy: one row per block.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/rows.cuh"

namespace weft::kernels::cuda {
namespace {

__global__ void softmax_forward_kernel(FloatRef x, FloatRef y, int64_t rows, int64_t cols) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * cols;
    const RowMaxSum stats = row_max_sum_exp(x, base, cols);
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      y.store(base + j, expf(x.load(base + j) - stats.max) / stats.sum_exp);
    }
  }
}

// dx = y * (dy - sum_j dy_j y_j).
__global__ void softmax_backward_kernel(FloatRef y, FloatRef dy, FloatRef dx, int64_t rows,
                                        int64_t cols) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * cols;
    float dot = 0.0f;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      dot += dy.load(base + j) * y.load(base + j);
    }
    dot = block_reduce(dot, SumOp());
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float yj = y.load(base + j);
      dx.store(base + j, yj * (dy.load(base + j) - dot));
    }
  }
}

// Column of the row's target inside the local vocabulary slice, or -1 (no label / not local).
__device__ inline int64_t local_target(IndexRef targets, int64_t row, int64_t vocab_start,
                                       int64_t cols) {
  const int64_t t = targets.load(row);
  const int64_t local = t - vocab_start;
  return t >= 0 && local >= 0 && local < cols ? local : -1;
}

__global__ void cross_entropy_forward_kernel(FloatRef logits, IndexRef targets, int64_t vocab_start,
                                             FloatRef lse, FloatRef target_logit, int64_t rows,
                                             int64_t cols) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * cols;
    const RowMaxSum stats = row_max_sum_exp(logits, base, cols);
    if (threadIdx.x == 0) {
      lse.store(row, stats.max + logf(stats.sum_exp));
      const int64_t t = local_target(targets, row, vocab_start, cols);
      target_logit.store(row, t >= 0 ? logits.load(base + t) : 0.0f);
    }
  }
}

// dlogits = row_scale * (exp(logits - lse) - onehot(target)); zero rows where target < 0.
__global__ void cross_entropy_backward_kernel(FloatRef logits, IndexRef targets,
                                              int64_t vocab_start, FloatRef lse, FloatRef row_scale,
                                              FloatRef dlogits, int64_t rows, int64_t cols) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * cols;
    const bool labelled = targets.load(row) >= 0;
    const int64_t t = local_target(targets, row, vocab_start, cols);
    const float row_lse = lse.load(row);
    const float scale = row_scale.load(row);
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      float g = 0.0f;
      if (labelled) {
        g = expf(logits.load(base + j) - row_lse);
        if (j == t) g -= 1.0f;
        g *= scale;
      }
      dlogits.store(base + j, g);
    }
  }
}

}  // namespace

void softmax_forward(const Tensor& x, Tensor& y) {
  const int64_t cols = x.dim(-1);
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  if (rows == 0) return;
  softmax_forward_kernel<<<row_grid(rows), kRowThreads, 0, compute_stream()>>>(
      float_ref(x), float_ref(y), rows, cols);
  WEFT_CUDA_LAUNCH_CHECK();
}

void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  const int64_t cols = y.dim(-1);
  const int64_t rows = cols == 0 ? 0 : y.numel() / cols;
  if (rows == 0) return;
  softmax_backward_kernel<<<row_grid(rows), kRowThreads, 0, compute_stream()>>>(
      float_ref(y), float_ref(dy), float_ref(dx), rows, cols);
  WEFT_CUDA_LAUNCH_CHECK();
}

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                           Tensor& lse, Tensor& target_logit) {
  const int64_t rows = targets.numel();
  const int64_t cols = logits.dim(-1);
  if (rows == 0) return;
  cross_entropy_forward_kernel<<<row_grid(rows), kRowThreads, 0, compute_stream()>>>(
      float_ref(logits), index_ref(targets), vocab_start, float_ref(lse), float_ref(target_logit),
      rows, cols);
  WEFT_CUDA_LAUNCH_CHECK();
}

void cross_entropy_backward(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                            const Tensor& lse, const Tensor& row_scale, Tensor& dlogits) {
  const int64_t rows = targets.numel();
  const int64_t cols = logits.dim(-1);
  if (rows == 0 || cols == 0) return;
  cross_entropy_backward_kernel<<<row_grid(rows), kRowThreads, 0, compute_stream()>>>(
      float_ref(logits), index_ref(targets), vocab_start, float_ref(lse), float_ref(row_scale),
      float_ref(dlogits), rows, cols);
  WEFT_CUDA_LAUNCH_CHECK();
}

}  // namespace weft::kernels::cuda
