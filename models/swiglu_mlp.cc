#include "models/swiglu_mlp.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "kernels/ops.h"

namespace weft::models {

SwiGluMlp::SwiGluMlp(const std::string& gate_name, const std::string& up_name,
                     const std::string& down_name, int64_t hidden, int64_t intermediate,
                     const TpShard& shard)
    : gate_(gate_name, hidden, intermediate, false, LinearSplit::kColumn, shard),
      up_(up_name, hidden, intermediate, false, LinearSplit::kColumn, shard),
      down_(down_name, intermediate, hidden, false, LinearSplit::kRow, shard) {}

std::unique_ptr<SwiGluMlp> SwiGluMlp::dense(int64_t layer, int64_t hidden, int64_t intermediate,
                                            const TpShard& shard) {
  const std::string prefix = absl::StrCat("model.layers.", layer, ".mlp.");
  return std::make_unique<SwiGluMlp>(prefix + "gate_proj", prefix + "up_proj", prefix + "down_proj",
                                     hidden, intermediate, shard);
}

Tensor SwiGluMlp::forward(const Tensor& x, SavedPtr* saved) const {
  Tensor y = Tensor::empty(x.shape());  // [N, D]
  if (saved == nullptr) {
    forward_into(x, y, nullptr);
    return y;
  }
  auto s = std::make_unique<Saved>();
  forward_into(x, y, s.get());
  *saved = std::move(s);
  return y;
}

void SwiGluMlp::forward_into(const Tensor& x, Tensor& y, Saved* saved) const {
  Tensor gate = gate_.forward(x);          // [n, F]
  Tensor up = up_.forward(x);              // [n, F]
  Tensor h = Tensor::empty(gate.shape());  // [n, F]
  kernels::swiglu_forward(gate, up, h);
  kernels::linear_forward(h, down_.weight().value, nullptr, y);
  if (saved != nullptr) {
    saved->x = x;
    saved->gate = std::move(gate);
    saved->up = std::move(up);
    saved->h = std::move(h);
  }
}

Tensor SwiGluMlp::backward(LayerSaved& saved, const Tensor& dy) {
  const auto& s = static_cast<const Saved&>(saved);
  Tensor dx = Tensor::empty(s.x.shape());  // [N, D]
  backward_into(s, dy, dx);
  return dx;
}

void SwiGluMlp::backward_into(const Saved& saved, const Tensor& dy, Tensor& dx) {
  Tensor dh = Tensor::empty(saved.h.shape());  // [n, F]
  down_.backward(saved.h, dy, &dh, false);
  Tensor dgate = Tensor::empty(saved.gate.shape());  // [n, F]
  Tensor dup = Tensor::empty(saved.up.shape());      // [n, F]
  kernels::swiglu_backward(saved.gate, saved.up, dh, dgate, dup);
  gate_.backward(saved.x, dgate, &dx, false);
  up_.backward(saved.x, dup, &dx, true);
}

void SwiGluMlp::collect_params(std::vector<Param*>& out) {
  gate_.collect_params(out);
  up_.collect_params(out);
  down_.collect_params(out);
}

}  // namespace weft::models
