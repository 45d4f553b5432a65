// Helpers for kernels that give one row of a [rows, cols] tensor to one thread block.
#pragma once

#include "kernels/cuda/cuda_common.cuh"

namespace weft::kernels::cuda {

// Rows handled by block b: b, b + gridDim.x, ...
inline int row_grid(int64_t rows) { return static_cast<int>(std::clamp<int64_t>(rows, 1, 65535)); }

struct RowMaxSum {
  float max;      // max_j x_j
  float sum_exp;  // sum_j exp(x_j - max); 0 when every x_j is -inf
};

// Row statistics for a softmax over x[base, base + cols), shared by every thread of the block.
__device__ inline RowMaxSum row_max_sum_exp(FloatRef x, int64_t base, int64_t cols) {
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, x.load(base + j));
  m = block_reduce(m, MaxOp());
  float s = 0.0f;
  if (m != -INFINITY) {
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += expf(x.load(base + j) - m);
  }
  s = block_reduce(s, SumOp());
  return {m, s};
}

}  // namespace weft::kernels::cuda
