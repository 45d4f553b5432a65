// The per-token half of a decoder block: a dense SwiGLU MLP or a sparse MoE block.
#pragma once

#include <vector>

#include "models/param.h"
#include "models/saved_activations.h"

namespace weft::models {

class FeedForward {
 public:
  virtual ~FeedForward() = default;

  // x [N, D] -> [N, D]; saved != nullptr: keep what backward() needs.
  [[nodiscard]] virtual Tensor forward(const Tensor& x, SavedPtr* saved) const = 0;
  // dy [N, D] -> dx [N, D]; adds into the parameter gradients.
  [[nodiscard]] virtual Tensor backward(LayerSaved& saved, const Tensor& dy) = 0;

  virtual void collect_params(std::vector<Param*>& out) = 0;
};

}  // namespace weft::models
