// RMSNorm layer: y = x / sqrt(mean(x^2) + eps) * w, weight [D] named `name` + ".weight".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/param.h"

namespace weft::models {

class RmsNorm {
 public:
  // What the backward needs: the input (shared, not copied) and the per-row 1/rms.
  struct Saved {
    Tensor x;     // [N, D]
    Tensor rstd;  // [N]
  };

  RmsNorm(const std::string& name, int64_t dim, float eps);

  // x [N, D] -> y [N, D]; fills `saved` when non-null. x must not change until the backward.
  [[nodiscard]] Tensor forward(const Tensor& x, Saved* saved) const;
  // dy [N, D] -> dx [N, D]; adds into the weight's gradient.
  [[nodiscard]] Tensor backward(const Saved& saved, const Tensor& dy);

  void collect_params(std::vector<Param*>& out) { out.push_back(&weight_); }
  [[nodiscard]] Param& weight() { return weight_; }

 private:
  Param weight_;  // [D]
  float eps_;
};

}  // namespace weft::models
