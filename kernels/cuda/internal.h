// Host-side helpers that several CUDA kernel files share (defined in elementwise.cu). Same
// conventions as kernels/ops.h: tensors on the current CUDA device, contiguous, row-major.
#pragma once

#include "runtime/core/tensor.h"

namespace weft::kernels::cuda {

// dst = src converted to dst's floating dtype (same number of elements).
void cast_into(const Tensor& src, Tensor& dst);
// y[N,C] += bias[C] broadcast over rows.
void add_bias_rows(Tensor& y, const Tensor& bias);
// out[C] += sum_n dy[n,c] * (x[n,c] * rstd[n] when x is defined, else 1).
// dy, x [N,C]; rstd [N]; accumulated in f32, rounded into out once.
void add_column_sums(const Tensor& dy, const Tensor& x, const Tensor& rstd, Tensor& out);

}  // namespace weft::kernels::cuda
