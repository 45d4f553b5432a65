// MoE top-k router: softmax, top-k with ties broken towards the lower expert, optional
// renormalisation; backward against central differences of the selected weights.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/test_util.h"

namespace weft::kernels {
namespace {

using testing::random_tensor;

struct Routed {
  Tensor probs, idx, weights;
};

Routed route(const Tensor& logits, int k, bool renormalize) {
  const int64_t rows = logits.dim(0);
  Routed r{Tensor::empty(logits.shape()), Tensor::empty({rows, k}, DType::kI32),
           Tensor::empty({rows, k})};
  topk_router_forward(logits, k, renormalize, r.probs, r.idx, r.weights);
  return r;
}

TEST(TopkRouter, TiesGoToTheLowerExpert) {
  const Tensor logits = Tensor::from_floats({1, 2, 2, 0, /**/ 3, 3, 3, 3, /**/ 0, 5, 1, 5}, {3, 4});
  const Routed r = route(logits, 2, false);
  EXPECT_EQ(r.idx.to_ints(), (std::vector<int64_t>{1, 2, 0, 1, 1, 3}));
  const std::vector<float> p = r.probs.to_floats();
  const std::vector<float> w = r.weights.to_floats();
  EXPECT_FLOAT_EQ(w[0], p[1]);
  EXPECT_FLOAT_EQ(w[2], 0.25f);
  EXPECT_FLOAT_EQ(w[4], p[9]);
}

TEST(TopkRouter, ProbsAndWeightsMatchReferenceWithAndWithoutRenormalisation) {
  const int64_t rows = 6, experts = 7;
  const int k = 3;
  const Tensor logits = random_tensor({rows, experts}, 1, -3, 3);
  const std::vector<float> lv = logits.to_floats();
  for (bool renormalize : {false, true}) {
    const Routed r = route(logits, k, renormalize);
    std::vector<float> want_p(rows * experts), want_w;
    std::vector<int64_t> want_idx;
    for (int64_t n = 0; n < rows; ++n) {
      double sum = 0;
      for (int64_t e = 0; e < experts; ++e)
        sum += std::exp(static_cast<double>(lv[n * experts + e]));
      std::vector<int64_t> order(experts);
      for (int64_t e = 0; e < experts; ++e) {
        want_p[n * experts + e] = static_cast<float>(std::exp(lv[n * experts + e]) / sum);
        order[e] = e;
      }
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return lv[n * experts + a] > lv[n * experts + b];
      });
      double chosen = 0;
      for (int j = 0; j < k; ++j) chosen += want_p[n * experts + order[j]];
      for (int j = 0; j < k; ++j) {
        want_idx.push_back(order[j]);
        want_w.push_back(
            static_cast<float>(want_p[n * experts + order[j]] / (renormalize ? chosen : 1.0)));
      }
    }
    EXPECT_TENSORS_CLOSE(r.probs, Tensor::from_floats(want_p, {rows, experts}), 1e-6);
    EXPECT_EQ(r.idx.to_ints(), want_idx);
    EXPECT_TENSORS_CLOSE(r.weights, Tensor::from_floats(want_w, {rows, k}), 1e-6)
        << "renormalize " << renormalize;
  }
}

// d/dlogits of sum(weights * dweights) with the selection held fixed (random logits, so no
// ties), by central differences of the selected weights computed in double.
TEST(TopkRouter, BackwardMatchesFiniteDifferences) {
  const int64_t rows = 4, experts = 6;
  const int k = 2;
  const Tensor logits = random_tensor({rows, experts}, 2, -2, 2);
  const Tensor dweights = random_tensor({rows, k}, 3);
  for (bool renormalize : {false, true}) {
    const Routed r = route(logits, k, renormalize);
    Tensor dlogits = Tensor::full({rows, experts}, 9.0f);
    topk_router_backward(r.probs, r.idx, r.weights, dweights, renormalize, dlogits);
    const std::vector<int64_t> idx = r.idx.to_ints();
    const std::vector<float> dw = dweights.to_floats();
    // sum_j dw_j * w_j(x) in double for the fixed selection idx.
    auto loss = [&](const std::vector<double>& x) {
      double total = 0;
      for (int64_t n = 0; n < rows; ++n) {
        double sum = 0, chosen = 0;
        for (int64_t e = 0; e < experts; ++e) sum += std::exp(x[n * experts + e]);
        for (int j = 0; j < k; ++j) chosen += std::exp(x[n * experts + idx[n * k + j]]) / sum;
        for (int j = 0; j < k; ++j) {
          const double p = std::exp(x[n * experts + idx[n * k + j]]) / sum;
          total += dw[n * k + j] * p / (renormalize ? chosen : 1.0);
        }
      }
      return total;
    };
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
    EXPECT_TENSORS_CLOSE(dlogits, Tensor::from_floats(want, {rows, experts}), 1e-5)
        << "renormalize " << renormalize;
  }
}

}  // namespace
}  // namespace weft::kernels
