// Vocabulary-parallel embedding lookup and its gradient.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace weft::kernels::cuda {
namespace {

// Row of the local table for token n, or -1 when its id lies outside [vocab_start, +rows).
__device__ inline int64_t local_row(IndexRef ids, int64_t n, int64_t vocab_start,
                                    int64_t table_rows) {
  const int64_t local = ids.load(n) - vocab_start;
  return local >= 0 && local < table_rows ? local : -1;
}

// out[n, j] = table[ids[n] - vocab_start, j] or 0.
__global__ void embedding_forward_kernel(IndexRef ids, FloatRef table, int64_t vocab_start,
                                         int64_t table_rows, FloatRef out, int64_t dim, int64_t n) {
  for (int64_t i : grid_stride(n)) {
    const int64_t row = local_row(ids, i / dim, vocab_start, table_rows);
    out.store(i, row >= 0 ? table.load(row * dim + i % dim) : 0.0f);
  }
}

// dtable[ids[n] - vocab_start, j] += dout[n, j]; repeated ids collide, hence atomics.
__global__ void embedding_backward_kernel(IndexRef ids, FloatRef dout, int64_t vocab_start,
                                          int64_t table_rows, FloatRef dtable, int64_t dim,
                                          int64_t n) {
  for (int64_t i : grid_stride(n)) {
    const int64_t row = local_row(ids, i / dim, vocab_start, table_rows);
    if (row >= 0) dtable.atomic_add(row * dim + i % dim, dout.load(i));
  }
}

}  // namespace

void embedding_forward(const Tensor& ids, const Tensor& table, int64_t vocab_start, Tensor& out) {
  const int64_t dim = table.dim(1);
  const int64_t n = ids.numel() * dim;
  if (n == 0) return;
  embedding_forward_kernel<<<grid_for(n, kThreads), kThreads, 0, compute_stream()>>>(
      index_ref(ids), float_ref(table), vocab_start, table.dim(0), float_ref(out), dim, n);
  WEFT_CUDA_LAUNCH_CHECK();
}

void embedding_backward(const Tensor& ids, const Tensor& dout, int64_t vocab_start,
                        Tensor& dtable) {
  const int64_t dim = dtable.dim(1);
  const int64_t n = ids.numel() * dim;
  if (n == 0) return;
  embedding_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, compute_stream()>>>(
      index_ref(ids), float_ref(dout), vocab_start, dtable.dim(0), float_ref(dtable), dim, n);
  WEFT_CUDA_LAUNCH_CHECK();
}

}  // namespace weft::kernels::cuda
