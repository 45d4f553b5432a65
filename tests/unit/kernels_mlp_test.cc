// SwiGLU h = silu(gate) * up against a double reference; backward against central differences.
#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/test_util.h"

namespace weft::kernels {
namespace {

using testing::random_tensor;

double silu(double x) { return x / (1.0 + std::exp(-x)); }

TEST(SwiGlu, ForwardMatchesReferenceAndBackwardMatchesFiniteDifferences) {
  const Shape shape = {3, 11};
  const Tensor gate = random_tensor(shape, 1, -6, 6);
  const Tensor up = random_tensor(shape, 2, -2, 2);
  const Tensor dh = random_tensor(shape, 3);
  Tensor h = Tensor::empty(shape);
  swiglu_forward(gate, up, h);
  Tensor dgate = Tensor::full(shape, 5.0f);
  Tensor dup = Tensor::full(shape, 5.0f);
  swiglu_backward(gate, up, dh, dgate, dup);

  const std::vector<float> g = gate.to_floats(), u = up.to_floats(), d = dh.to_floats();
  std::vector<float> want_h(g.size()), want_dgate(g.size()), want_dup(g.size());
  constexpr double kStep = 1e-6;
  for (size_t i = 0; i < g.size(); ++i) {
    want_h[i] = static_cast<float>(silu(g[i]) * u[i]);
    const double dsilu = (silu(g[i] + kStep) - silu(g[i] - kStep)) / (2 * kStep);
    want_dgate[i] = static_cast<float>(d[i] * u[i] * dsilu);
    want_dup[i] = static_cast<float>(d[i] * silu(g[i]));
  }
  EXPECT_TENSORS_CLOSE(h, Tensor::from_floats(want_h, shape), 1e-6);
  EXPECT_TENSORS_CLOSE(dgate, Tensor::from_floats(want_dgate, shape), 1e-6);
  EXPECT_TENSORS_CLOSE(dup, Tensor::from_floats(want_dup, shape), 1e-6);
}

}  // namespace
}  // namespace weft::kernels
