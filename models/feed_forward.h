// The per-token half of a decoder block: a dense SwiGLU MLP or a sparse MoE block.
#pragma once

#include <vector>

#include "models/param.h"
#include "models/saved_activations.h"
#include "models/token_batch.h"
#include "parallel/tensor_parallel.h"

namespace weft::models {

class FeedForward {
 public:
  virtual ~FeedForward() = default;

  // x [N, D] -> [N, D]; saved != nullptr: keep what backward() needs.
  [[nodiscard]] virtual Tensor forward(const Tensor& x, SavedPtr* saved) const = 0;
  // dy [N, D] -> dx [N, D]; adds into the parameter gradients.
  [[nodiscard]] virtual Tensor backward(LayerSaved& saved, const Tensor& dy) = 0;

  // The block as the decoder runs it: x [n, D] holds this rank's rows outside the tp region
  // (all N, or its sequence block under sequence parallelism) -> the whole output for those
  // rows. The default enters the region, runs forward() on its features' share and leaves the
  // region (reducing the partial sums); an expert-parallel MoE block moves tokens itself.
  [[nodiscard]] virtual Tensor forward_in_region(const TokenBatch& batch, const Tensor& x,
                                                 const parallel::TensorParallelRegion& region,
                                                 SavedPtr* saved) const {
    (void)batch;
    return region.leave(forward(region.enter(x), saved));
  }
  // dy [n, D] -> dx [n, D], the region as in the forward.
  [[nodiscard]] virtual Tensor backward_in_region(LayerSaved& saved, const Tensor& dy,
                                                  const parallel::TensorParallelRegion& region) {
    return region.enter_backward(backward(saved, region.leave_backward(dy)));
  }

  virtual void collect_params(std::vector<Param*>& out) = 0;
};

}  // namespace weft::models
