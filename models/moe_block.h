// Sparse MoE block (Mixtral: "model.layers.{i}.block_sparse_moe.gate" [E, D] and
// "...experts.{e}.w1/w3/w2"): softmax router over E experts, top-k, renormalised weights;
// tokens are grouped by expert (permuted), each expert runs on its own rows, and the outputs
// are summed back per token with the router weights:
//   y_n = sum_j w_{n,j} expert_{idx_{n,j}}(x_n)
// The load-balancing loss is not computed (coefficient 0 by default, docs/architecture.md).
//
// Two layouts (models/expert_context.h):
//  - plain (no --ep/--etp): every expert split by features over tp, the tokens replicated over
//    tp; the output is a partial sum for the decoder's tp region to reduce. The router is
//    replicated and sees the same tokens on every tp rank; its weights' gradient needs the
//    whole expert outputs (an all-reduce of [N, k] over tp).
//  - expert parallel (docs/algorithms.md "Expert parallelism"): this rank hosts E/ep experts,
//    each split by features over etp. Each tp rank takes its own share of the rows (its
//    sequence block under sequence parallelism; else a contiguous 1/tp of the replicated rows),
//    routes them, sends every chosen (token, expert) row to the expert's rank with
//    parallel::ExpertDispatch, and gathers the combined rows back over tp. The router's
//    gradient is then a partial over tp (summed by the model, like sequence-parallel norms) and
//    the experts' gradients are partial over edp (summed by the optimizer).
// Capacity (ExpertContext::capacity_factor F > 0, full sequences only): per sequence of T
// tokens each expert takes its first ceil(F * T * k / E) choices in (position, choice) order;
// a dropped choice contributes nothing (the token keeps its residual and its other choices).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "models/expert_context.h"
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

// Which of the N*k choices idx [N, k] (rows: `sequences` sequences of equal length, in order)
// an expert keeps under the per-sequence capacity ceil(factor * T * k / E): keep[n*k + j].
std::vector<bool> capacity_keep(const Tensor& idx, int64_t sequences, int64_t num_experts,
                                double factor);

// Choices routed and dropped by one block since the counters were last read.
struct MoeCounts {
  int64_t routed = 0;
  int64_t dropped = 0;
  int64_t remote_rows = 0;  // rows the forward dispatch sent to other ep ranks
  double aux = 0;           // sum of the layer's load-balancing terms, one per forward
};

class MoeBlock final : public FeedForward {
 public:
  MoeBlock(const io::ModelConfig& config, int64_t layer, const TpContext& tp,
           const ExpertContext& experts);

  // The plain layout's block without capacity (x and the output replicated over tp).
  [[nodiscard]] Tensor forward(const Tensor& x, SavedPtr* saved) const override;
  [[nodiscard]] Tensor backward(LayerSaved& saved, const Tensor& dy) override;
  [[nodiscard]] Tensor forward_in_region(const TokenBatch& batch, const Tensor& x,
                                         const parallel::TensorParallelRegion& region,
                                         SavedPtr* saved) const override;
  [[nodiscard]] Tensor backward_in_region(LayerSaved& saved, const Tensor& dy,
                                          const parallel::TensorParallelRegion& region) override;
  void collect_params(std::vector<Param*>& out) override;

  // Counts since the last call (then reset).
  MoeCounts take_counts() { return std::exchange(counts_, {}); }
  // The load-balancing loss (docs/algorithms.md "Load-balancing loss"): `scale` = the loss
  // coefficient over the step's micro-batches (0: off). Its statistics are collective over
  // ExpertContext::token_groups in every forward while it is on.
  void set_aux_loss_scale(double scale) { aux_scale_ = scale; }
  // While set, forwards repeat an earlier one (activation recomputation): they neither count
  // nor call the routing sink.
  void set_recomputing(bool recomputing) { recomputing_ = recomputing; }
  // StreamBP runs a layer's backward chunk by chunk of positions, while the load-balancing
  // gradient needs the statistics of the whole micro-batch: last_balance() is what the latest
  // counted forward computed (d aux / d probs per expert, empty when the loss is off), and while
  // `balance` is set the forwards use it instead of their own rows' statistics.
  [[nodiscard]] const std::vector<float>& last_balance() const { return last_balance_; }
  void set_fixed_balance(const std::vector<float>* balance) { fixed_balance_ = balance; }
  // Called with the expert choices idx [n, k] (i32) of every forward's routed rows.
  void set_routing_sink(std::function<void(const Tensor& idx)> sink) {
    routing_sink_ = std::move(sink);
  }

 private:
  struct Saved;
  struct Routed;

  // Router, top-k and capacity over x [n, D] (the rows of `sequences` whole sequences, or
  // sequences = 0 when capacity does not apply).
  [[nodiscard]] Routed route(const Tensor& x, int64_t sequences) const;
  // Load balance of the rows this rank routes (`counted`: false where another tp rank counts
  // the same rows): the global f_e and P_e of the micro-batch, the layer's aux term added to
  // the counters; returns d(scaled aux)/d probs[n, e] (the same for every row), or empty when
  // the loss is off.
  [[nodiscard]] std::vector<float> balance(const Routed& routed, bool counted) const;
  // The router's backward from dweights [n, k] and the aux loss: adds its weight gradient;
  // returns its input gradient [n, D] when `with_dx`, else zeros of that shape.
  [[nodiscard]] Tensor router_backward(const Saved& s, const Tensor& dweights, bool with_dx);
  // dlogits [n, E] += the softmax backward of the aux gradient `dprob` (every row the same).
  static void add_aux_grad(const Routed& routed, const std::vector<float>& dprob, Tensor& dlogits);
  // The plain layout on x [N, D] (inside the tp region).
  [[nodiscard]] Tensor plain_forward(const Tensor& x, int64_t sequences, SavedPtr* saved) const;
  // The expert-parallel path on this rank's own rows x [n, D] -> [n, D].
  [[nodiscard]] Tensor dispatch_forward(const Tensor& x, Routed routed, Saved* saved) const;
  [[nodiscard]] Tensor dispatch_backward(Saved& s, const Tensor& dy);
  // Speculative dispatch (models/moe_speculative.cc): the same with one row per (token,
  // destination rank).
  [[nodiscard]] Tensor speculative_forward(const Tensor& x, Routed routed, Saved* saved) const;
  [[nodiscard]] Tensor speculative_backward(Saved& s, const Tensor& dy);
  // Rows replicated over tp: which of them each tp rank routes (s.tp_rows, s.tp_order, s.own).
  void share_rows(const Routed& routed, Saved& s) const;

  Linear router_;  // [E, D], no bias, replicated
  // Plain layout: all E experts; expert parallel: this rank's E/ep, in placement order.
  std::vector<std::unique_ptr<SwiGluMlp>> experts_;
  int top_k_;
  int64_t num_experts_;
  TpContext tp_;
  ExpertContext ep_;
  std::vector<int> owner_;     // [E] ep rank hosting each expert
  std::vector<int64_t> slot_;  // [E] its index among that rank's experts
  mutable MoeCounts counts_;
  std::function<void(const Tensor&)> routing_sink_;
  double aux_scale_ = 0;
  bool recomputing_ = false;
  mutable std::vector<float> last_balance_;
  const std::vector<float>* fixed_balance_ = nullptr;
  int64_t num_layers_;  // L: the aux terms are averaged over layers
};

}  // namespace weft::models
