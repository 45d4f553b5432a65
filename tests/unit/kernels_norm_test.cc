// RMSNorm against a double reference; its backward against central differences.
#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/numeric_grad.h"
#include "tests/support/test_util.h"

namespace weft::kernels {
namespace {

using testing::numeric_grad;
using testing::random_tensor;

constexpr float kEps = 1e-5f;

std::vector<double> as_doubles(const Tensor& t) {
  const std::vector<float> f = t.to_floats();
  return {f.begin(), f.end()};
}

Tensor as_tensor(const std::vector<double>& v, const Shape& shape) {
  return Tensor::from_floats(std::vector<float>(v.begin(), v.end()), shape);
}

// y = x / sqrt(mean(x^2) + eps) * w over rows of width w.size().
std::vector<double> reference(const std::vector<double>& x, const std::vector<double>& w) {
  const size_t dim = w.size();
  std::vector<double> y(x.size());
  for (size_t r = 0; r < x.size() / dim; ++r) {
    double ss = 0;
    for (size_t j = 0; j < dim; ++j) ss += x[r * dim + j] * x[r * dim + j];
    const double rstd = 1.0 / std::sqrt(ss / dim + kEps);
    for (size_t j = 0; j < dim; ++j) y[r * dim + j] = x[r * dim + j] * rstd * w[j];
  }
  return y;
}

class RmsNormShapes : public ::testing::TestWithParam<Shape> {};

TEST_P(RmsNormShapes, ForwardMatchesReference) {
  const Shape shape = GetParam();
  const Tensor x = random_tensor(shape, 1, -2, 2);
  const Tensor w = random_tensor({shape.back()}, 2);
  Tensor y = Tensor::empty(shape);
  Tensor rstd = Tensor::empty({x.numel() / shape.back()});
  rmsnorm_forward(x, w, kEps, y, rstd);
  EXPECT_TENSORS_CLOSE(y, as_tensor(reference(as_doubles(x), as_doubles(w)), shape), 1e-6);
}

TEST_P(RmsNormShapes, BackwardMatchesFiniteDifferencesAndAddsDw) {
  const Shape shape = GetParam();
  const Tensor x = random_tensor(shape, 3, -2, 2);
  const Tensor w = random_tensor({shape.back()}, 4);
  const Tensor dy = random_tensor(shape, 5);
  Tensor y = Tensor::empty(shape);
  Tensor rstd = Tensor::empty({x.numel() / shape.back()});
  rmsnorm_forward(x, w, kEps, y, rstd);
  const Tensor dw0 = random_tensor({shape.back()}, 6);
  Tensor dw = dw0.clone();
  Tensor dx = Tensor::full(shape, 8.0f);
  rmsnorm_backward(x, w, rstd, dy, dx, dw);

  const std::vector<double> xd = as_doubles(x), wd = as_doubles(w), dyd = as_doubles(dy);
  const auto gx = numeric_grad([&](const auto& v) { return reference(v, wd); }, xd, dyd);
  std::vector<double> gw = numeric_grad([&](const auto& v) { return reference(xd, v); }, wd, dyd);
  const std::vector<double> dw0d = as_doubles(dw0);
  for (size_t j = 0; j < gw.size(); ++j) gw[j] += dw0d[j];
  EXPECT_TENSORS_CLOSE(dx, as_tensor(gx, shape), 1e-5);
  EXPECT_TENSORS_CLOSE(dw, as_tensor(gw, w.shape()), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, RmsNormShapes,
                         ::testing::Values(Shape{5, 7}, Shape{1, 64}, Shape{2, 3, 13}));

}  // namespace
}  // namespace weft::kernels
