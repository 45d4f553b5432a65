// Vocabulary-parallel embedding and cross-entropy, and row softmax, against plain references:
// a vocabulary slice that starts past zero, targets outside it and negative ("no label").
#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/test_util.h"

namespace weft::kernels {
namespace {

using testing::random_tensor;

// An i32 index tensor (from_ints makes i64).
Tensor ints32(const std::vector<int64_t>& values, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::kI32);
  for (size_t i = 0; i < values.size(); ++i) t.data<int32_t>()[i] = static_cast<int32_t>(values[i]);
  return t;
}

TEST(Embedding, LooksUpLocalRowsAndZeroesOthers) {
  const int64_t vocab_start = 4, local = 5, dim = 3;
  const Tensor table = random_tensor({local, dim}, 1);
  const std::vector<int64_t> ids = {4, 8, 3, 9, 6, 6};  // 3 and 9 live on other ranks
  const std::vector<float> tv = table.to_floats();
  std::vector<float> want;
  for (int64_t id : ids) {
    for (int64_t j = 0; j < dim; ++j) {
      const bool mine = id >= vocab_start && id < vocab_start + local;
      want.push_back(mine ? tv[(id - vocab_start) * dim + j] : 0.0f);
    }
  }
  Tensor out = Tensor::full({2, 3, dim}, 9.0f);
  embedding_forward(ints32(ids, {2, 3}), table, vocab_start, out);
  EXPECT_TENSORS_CLOSE(out, Tensor::from_floats(want, {2, 3, dim}), 0.0);

  const Tensor dout = random_tensor({6, dim}, 2);
  const Tensor dtable0 = random_tensor({local, dim}, 3);
  Tensor dtable = dtable0.clone();
  embedding_backward(Tensor::from_ints(ids, {6}), dout, vocab_start, dtable);
  std::vector<float> want_dt = dtable0.to_floats();
  const std::vector<float> dv = dout.to_floats();
  for (size_t n = 0; n < ids.size(); ++n) {
    if (ids[n] < vocab_start || ids[n] >= vocab_start + local) continue;
    for (int64_t j = 0; j < dim; ++j) want_dt[(ids[n] - vocab_start) * dim + j] += dv[n * dim + j];
  }
  EXPECT_TENSORS_CLOSE(dtable, Tensor::from_floats(want_dt, {local, dim}), 1e-7);
}

TEST(CrossEntropy, LocalLseAndTargetLogitWithSliceOffset) {
  const int64_t rows = 5, local = 7, vocab_start = 10;
  const Tensor logits = random_tensor({rows, local}, 4, -5, 5);
  const std::vector<int64_t> targets = {12, 3, -1, 16, 17};  // local, remote, none, local, remote
  Tensor lse = Tensor::empty({rows});
  Tensor tl = Tensor::full({rows}, 9.0f);
  cross_entropy_forward(logits, Tensor::from_ints(targets, {rows}), vocab_start, lse, tl);
  const std::vector<float> lv = logits.to_floats();
  std::vector<float> want_lse(rows), want_tl(rows);
  for (int64_t n = 0; n < rows; ++n) {
    double sum = 0;
    for (int64_t j = 0; j < local; ++j) sum += std::exp(static_cast<double>(lv[n * local + j]));
    want_lse[n] = static_cast<float>(std::log(sum));
    const int64_t col = targets[n] - vocab_start;
    want_tl[n] = targets[n] >= 0 && col >= 0 && col < local ? lv[n * local + col] : 0.0f;
  }
  EXPECT_TENSORS_CLOSE(lse, Tensor::from_floats(want_lse, {rows}), 1e-6);
  EXPECT_TENSORS_CLOSE(tl, Tensor::from_floats(want_tl, {rows}), 0.0);
}

TEST(CrossEntropy, BackwardUsesGivenLseAndSkipsUnlabelledRows) {
  const int64_t rows = 4, local = 6, vocab_start = 3;
  const Tensor logits = random_tensor({rows, local}, 5, -3, 3);
  const std::vector<int64_t> targets = {5, 0, -1, 8};
  const Tensor lse = random_tensor({rows}, 6, 2, 3);  // a "global" lse, not this slice's
  const Tensor row_scale = random_tensor({rows}, 7, 0.1f, 1.0f);
  Tensor dlogits = Tensor::full({rows, local}, 9.0f);
  cross_entropy_backward(logits, ints32(targets, {rows}), vocab_start, lse, row_scale, dlogits);
  const std::vector<float> lv = logits.to_floats(), l = lse.to_floats(), s = row_scale.to_floats();
  std::vector<float> want(rows * local, 0.0f);
  for (int64_t n = 0; n < rows; ++n) {
    if (targets[n] < 0) continue;
    for (int64_t j = 0; j < local; ++j) {
      const double onehot = targets[n] - vocab_start == j ? 1.0 : 0.0;
      want[n * local + j] =
          static_cast<float>(s[n] * (std::exp(lv[n * local + j] - l[n]) - onehot));
    }
  }
  EXPECT_TENSORS_CLOSE(dlogits, Tensor::from_floats(want, {rows, local}), 1e-6);
}

// On one rank (vocab_start 0, its own lse) the backward is the gradient of
// sum_n row_scale[n] * (lse[n] - target_logit[n]): checked by central differences.
TEST(CrossEntropy, BackwardIsGradientOfLossOnOneRank) {
  const int64_t rows = 3, vocab = 5;
  const Tensor logits = random_tensor({rows, vocab}, 8, -2, 2);
  const Tensor targets = Tensor::from_ints({4, 0, 2}, {rows});
  const std::vector<int64_t> tv = targets.to_ints();
  const std::vector<float> scale = {0.5f, 0.25f, 1.0f};
  auto loss = [&](const std::vector<double>& x) {
    double total = 0;
    for (int64_t n = 0; n < rows; ++n) {
      double sum = 0;
      for (int64_t j = 0; j < vocab; ++j) sum += std::exp(x[n * vocab + j]);
      total += scale[n] * (std::log(sum) - x[n * vocab + tv[n]]);
    }
    return total;
  };
  Tensor lse = Tensor::empty({rows});
  Tensor tl = Tensor::empty({rows});
  cross_entropy_forward(logits, targets, 0, lse, tl);
  Tensor dlogits = Tensor::empty({rows, vocab});
  cross_entropy_backward(logits, targets, 0, lse, Tensor::from_floats(scale, {rows}), dlogits);
  const std::vector<float> lv = logits.to_floats();
  std::vector<double> x(lv.begin(), lv.end());
  std::vector<float> want(x.size());
  constexpr double kStep = 1e-6;
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + kStep;
    const double plus = loss(x);
    x[i] = saved - kStep;
    const double minus = loss(x);
    x[i] = saved;
    want[i] = static_cast<float>((plus - minus) / (2 * kStep));
  }
  EXPECT_TENSORS_CLOSE(dlogits, Tensor::from_floats(want, {rows, vocab}), 1e-5);
}

TEST(Softmax, ForwardAndBackwardMatchReference) {
  const int64_t rows = 3, cols = 9;
  const Tensor x = random_tensor({rows, cols}, 9, -4, 4);
  const Tensor dy = random_tensor({rows, cols}, 10);
  Tensor y = Tensor::empty({rows, cols});
  softmax_forward(x, y);
  Tensor dx = Tensor::empty({rows, cols});
  softmax_backward(y, dy, dx);
  const std::vector<float> xv = x.to_floats(), dyv = dy.to_floats();
  std::vector<float> want_y(xv.size()), want_dx(xv.size());
  for (int64_t n = 0; n < rows; ++n) {
    double sum = 0;
    for (int64_t j = 0; j < cols; ++j) sum += std::exp(static_cast<double>(xv[n * cols + j]));
    double dot = 0;
    for (int64_t j = 0; j < cols; ++j) dot += std::exp(xv[n * cols + j]) / sum * dyv[n * cols + j];
    for (int64_t j = 0; j < cols; ++j) {
      const double p = std::exp(static_cast<double>(xv[n * cols + j])) / sum;
      want_y[n * cols + j] = static_cast<float>(p);
      want_dx[n * cols + j] = static_cast<float>(p * (dyv[n * cols + j] - dot));
    }
  }
  EXPECT_TENSORS_CLOSE(y, Tensor::from_floats(want_y, {rows, cols}), 1e-6);
  EXPECT_TENSORS_CLOSE(dx, Tensor::from_floats(want_dx, {rows, cols}), 1e-5);
}

}  // namespace
}  // namespace weft::kernels
