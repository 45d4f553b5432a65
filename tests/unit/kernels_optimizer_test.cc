// AdamW against torch.optim.AdamW's update written out in double, over three steps.
#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/test_util.h"

namespace weft::kernels {
namespace {

using testing::random_tensor;

TEST(AdamW, ThreeStepsMatchTorchFormula) {
  const Shape shape = {4, 5};
  AdamWConfig cfg;
  cfg.lr = 1e-2f;
  cfg.weight_decay = 0.1f;
  Tensor param = random_tensor(shape, 1);
  Tensor m = Tensor::zeros(shape);
  Tensor v = Tensor::zeros(shape);
  const std::vector<float> p0 = param.to_floats();
  std::vector<double> p(p0.begin(), p0.end());
  std::vector<double> md(p.size());
  std::vector<double> vd(p.size());
  for (int64_t step = 1; step <= 3; ++step) {
    // Tiny gradients too, where eps matters.
    const Tensor grad =
        random_tensor(shape, 10 + step, step == 2 ? -1e-7f : -1.0f, step == 2 ? 1e-7f : 1.0f);
    adamw_step(param, grad, m, v, cfg, step);
    const std::vector<float> g = grad.to_floats();
    const double bc1 = 1 - std::pow(double{cfg.beta1}, step);
    const double bc2 = 1 - std::pow(double{cfg.beta2}, step);
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] *= 1 - double{cfg.lr} * cfg.weight_decay;
      md[i] = cfg.beta1 * md[i] + (1 - double{cfg.beta1}) * g[i];
      vd[i] = cfg.beta2 * vd[i] + (1 - double{cfg.beta2}) * g[i] * g[i];
      p[i] -= cfg.lr / bc1 * md[i] / (std::sqrt(vd[i]) / std::sqrt(bc2) + cfg.eps);
    }
    auto as_tensor = [&](const std::vector<double>& x) {
      return Tensor::from_floats(std::vector<float>(x.begin(), x.end()), shape);
    };
    EXPECT_TENSORS_CLOSE(param, as_tensor(p), 1e-6) << "step " << step;
    EXPECT_TENSORS_CLOSE(m, as_tensor(md), 1e-6) << "step " << step;
    EXPECT_TENSORS_CLOSE(v, as_tensor(vd), 1e-6) << "step " << step;
  }
}

}  // namespace
}  // namespace weft::kernels
