#include "models/rmsnorm.h"

#include "kernels/ops.h"
#include "models/param_init.h"

namespace weft::models {

RmsNorm::RmsNorm(const std::string& name, int64_t dim, float eps)
    : weight_(new_param(name + ".weight", {dim})), eps_(eps) {}

Tensor RmsNorm::forward(const Tensor& x, Saved* saved) const {
  Tensor y = Tensor::empty(x.shape());      // [N, D]
  Tensor rstd = Tensor::empty({x.dim(0)});  // [N]
  kernels::rmsnorm_forward(x, weight_.value, eps_, y, rstd);
  if (saved != nullptr) *saved = {x, rstd};
  return y;
}

Tensor RmsNorm::backward(const Saved& saved, const Tensor& dy) {
  Tensor dx = Tensor::empty(saved.x.shape());  // [N, D]
  kernels::rmsnorm_backward(saved.x, weight_.value, saved.rstd, dy, dx, weight_.grad);
  return dx;
}

}  // namespace weft::models
