#include "models/linear.h"

#include "kernels/ops.h"
#include "models/param_init.h"
#include "runtime/core/check.h"

namespace weft::models {

namespace {

// W [out, in]: column-parallel splits the output features (dim 0), row-parallel the input (1).
int weight_split_dim(LinearSplit split) {
  switch (split) {
    case LinearSplit::kColumn:
      return 0;
    case LinearSplit::kRow:
      return 1;
    case LinearSplit::kNone:
      break;
  }
  return -1;
}

}  // namespace

Linear::Linear(const std::string& name, int64_t in, int64_t out, bool bias, LinearSplit split,
               const TpShard& shard)
    : weight_(new_sharded_param(name + ".weight", {out, in}, weight_split_dim(split), shard)) {
  // A row-parallel bias would be added once per rank into the partial sums.
  WEFT_CHECK(!(bias && split == LinearSplit::kRow)) << name << ": row-parallel with a bias";
  if (bias) {
    bias_ = new_sharded_param(name + ".bias", {out}, split == LinearSplit::kColumn ? 0 : -1, shard);
  }
}

Tensor Linear::forward(const Tensor& x) const {
  Tensor y = Tensor::empty({x.dim(0), out_features()});  // [N, out]
  kernels::linear_forward(x, weight_.value, bias_.value.defined() ? &bias_.value : nullptr, y);
  return y;
}

void Linear::backward(const Tensor& x, const Tensor& dy, Tensor* dx, bool accumulate_dx) {
  const bool has_bias = bias_.value.defined();
  Tensor* dx_written = accumulate_dx ? nullptr : dx;
  kernels::linear_backward(x, weight_.value, dy, dx_written, &weight_.grad,
                           has_bias ? &bias_.grad : nullptr);
  if (accumulate_dx && dx != nullptr) {
    kernels::gemm(dy, false, weight_.value, false, *dx, 1.0f, 1.0f);  // dx += dy @ W
  }
}

void Linear::collect_params(std::vector<Param*>& out) {
  out.push_back(&weight_);
  if (bias_.value.defined()) out.push_back(&bias_);
}

}  // namespace weft::models
