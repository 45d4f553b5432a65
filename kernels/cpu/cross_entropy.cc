// Vocabulary-parallel cross-entropy pieces: local log-sum-exp and target logit per row, and
// the gradient given the (global) lse.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"

namespace weft::kernels::cpu {

namespace {

// Column of targets[n] in this rank's slice, or -1 when the label is absent or elsewhere.
int64_t local_column(const IndexReader& targets, int64_t n, int64_t vocab_start, int64_t vocab) {
  const int64_t t = targets[n];
  if (t < 0) return -1;
  const int64_t col = t - vocab_start;
  return col >= 0 && col < vocab ? col : -1;
}

// log sum_j exp(x[j]) for j < n.
float log_sum_exp(const float* x, int64_t n) {
  const float m = max_of(x, n);
  if (m == kNegInf) return kNegInf;
  return m + std::log(sum_exp(x, m, n));
}

}  // namespace

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                           Tensor& lse, Tensor& target_logit) {
  const int64_t rows = logits.dim(0);
  const int64_t vocab = logits.dim(1);
  const IndexReader tg(targets);
  const float* lp = logits.data<float>();
  float* lsep = lse.data<float>();
  float* tlp = target_logit.data<float>();
  for (int64_t n = 0; n < rows; ++n) {
    const float* row = lp + n * vocab;
    lsep[n] = log_sum_exp(row, vocab);
    const int64_t col = local_column(tg, n, vocab_start, vocab);
    tlp[n] = col >= 0 ? row[col] : 0.0f;
  }
}

void cross_entropy_backward(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                            const Tensor& lse, const Tensor& row_scale, Tensor& dlogits) {
  const int64_t rows = logits.dim(0);
  const int64_t vocab = logits.dim(1);
  const IndexReader tg(targets);
  const float* lp = logits.data<float>();
  const float* lsep = lse.data<float>();
  const float* sp = row_scale.data<float>();
  float* dp = dlogits.data<float>();
  for (int64_t n = 0; n < rows; ++n) {
    float* drow = dp + n * vocab;
    if (tg[n] < 0) {
      std::fill(drow, drow + vocab, 0.0f);
      continue;
    }
    const float* row = lp + n * vocab;
    exp_shifted(row, lsep[n], sp[n], vocab, drow);
    const int64_t col = local_column(tg, n, vocab_start, vocab);
    if (col >= 0) drow[col] -= sp[n];
  }
}

}  // namespace weft::kernels::cpu
