// SwiGLU MLP: y = down(silu(gate(x)) * up(x)). The dense MLP of Llama/Qwen2 (mlp.gate_proj,
// mlp.up_proj, mlp.down_proj) and each Mixtral expert (w1 = gate, w3 = up, w2 = down).
// Under tensor parallelism split by features: gate/up column-parallel, down row-parallel; the
// output is then a partial sum that the caller's tp region reduces.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/feed_forward.h"
#include "models/linear.h"

namespace weft::models {

class SwiGluMlp final : public FeedForward {
 public:
  struct Saved : LayerSaved {
    Tensor x;     // [N, D] the input
    Tensor gate;  // [N, F/tp]
    Tensor up;    // [N, F/tp]
    Tensor h;     // [N, F/tp] silu(gate) * up
  };

  // Module names without ".weight"; no biases. `intermediate` is the global F; `shard` this
  // rank's block of the features.
  SwiGluMlp(const std::string& gate_name, const std::string& up_name, const std::string& down_name,
            int64_t hidden, int64_t intermediate, const TpShard& shard);
  // The dense MLP of decoder layer `layer`: "model.layers.{layer}.mlp.{gate,up,down}_proj".
  static std::unique_ptr<SwiGluMlp> dense(int64_t layer, int64_t hidden, int64_t intermediate,
                                          const TpShard& shard);

  [[nodiscard]] Tensor forward(const Tensor& x, SavedPtr* saved) const override;
  [[nodiscard]] Tensor backward(LayerSaved& saved, const Tensor& dy) override;
  void collect_params(std::vector<Param*>& out) override;

  // The same into caller-provided memory (MoE experts write slices of one buffer):
  // x [n, D] -> writes y [n, D]; and dy [n, D] -> writes dx [n, D].
  void forward_into(const Tensor& x, Tensor& y, Saved* saved) const;
  void backward_into(const Saved& saved, const Tensor& dy, Tensor& dx);

 private:
  Linear gate_;  // [F/tp, D]
  Linear up_;    // [F/tp, D]
  Linear down_;  // [D, F/tp]
};

}  // namespace weft::models
