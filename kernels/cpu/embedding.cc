// Vocabulary-parallel embedding: this rank owns table rows for ids [vocab_start, +V_local).
#include <algorithm>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"

namespace weft::kernels::cpu {

void embedding_forward(const Tensor& ids, const Tensor& table, int64_t vocab_start, Tensor& out) {
  const int64_t n = ids.numel();
  const int64_t vocab = table.dim(0);
  const int64_t dim = table.dim(1);
  const IndexReader id(ids);
  const float* tp = table.data<float>();
  float* op = out.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = id[i] - vocab_start;
    float* dst = op + i * dim;
    if (row >= 0 && row < vocab) {
      std::copy(tp + row * dim, tp + (row + 1) * dim, dst);
    } else {
      std::fill(dst, dst + dim, 0.0f);
    }
  }
}

void embedding_backward(const Tensor& ids, const Tensor& dout, int64_t vocab_start,
                        Tensor& dtable) {
  const int64_t n = ids.numel();
  const int64_t vocab = dtable.dim(0);
  const int64_t dim = dtable.dim(1);
  const IndexReader id(ids);
  const float* gp = dout.data<float>();
  float* tp = dtable.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = id[i] - vocab_start;
    if (row < 0 || row >= vocab) continue;
    const float* src = gp + i * dim;
    float* dst = tp + row * dim;
    for (int64_t j = 0; j < dim; ++j) dst[j] += src[j];
  }
}

}  // namespace weft::kernels::cpu
