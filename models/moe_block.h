// Sparse MoE block (Mixtral: "model.layers.{i}.block_sparse_moe.gate" [E, D] and
// "...experts.{e}.w1/w3/w2"): softmax router over E experts, top-k, renormalised weights;
// tokens are grouped by expert (permuted), each expert runs on its own rows, and the outputs
// are summed back per token with the router weights:
//   y_n = sum_j w_{n,j} expert_{idx_{n,j}}(x_n)
// Dropless; the load-balancing loss is not computed (coefficient 0 by default,
// docs/architecture.md). Under tensor parallelism every expert is split by features over tp (its
// output a partial sum for the caller's tp region to reduce); the router is replicated and sees the
// same tokens on every rank, so its choices agree; the router weights' gradient needs the whole
// expert outputs (an all-reduce of [N, k] over tp).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "models/feed_forward.h"
#include "models/linear.h"
#include "models/swiglu_mlp.h"
#include "models/tp_context.h"
#include "runtime/io/model_config.h"

namespace weft::models {

// Where each (token, choice) goes when the rows are sorted by expert (stable in token order).
struct ExpertRouting {
  std::vector<int64_t> row_of;        // [N*k]: sorted row of choice j of token n at n*k + j
  std::vector<int64_t> expert_begin;  // [E+1]: expert e owns sorted rows [begin[e], begin[e+1])

  // idx [N, k] (expert ids) -> the routing.
  static ExpertRouting from_choices(const Tensor& idx, int64_t num_experts);
};

class MoeBlock final : public FeedForward {
 public:
  MoeBlock(const io::ModelConfig& config, int64_t layer, const TpContext& tp);

  [[nodiscard]] Tensor forward(const Tensor& x, SavedPtr* saved) const override;
  [[nodiscard]] Tensor backward(LayerSaved& saved, const Tensor& dy) override;
  void collect_params(std::vector<Param*>& out) override;

 private:
  struct Saved;

  Linear router_;  // [E, D], no bias
  std::vector<std::unique_ptr<SwiGluMlp>> experts_;
  int top_k_;
  TpContext tp_;
};

}  // namespace weft::models
