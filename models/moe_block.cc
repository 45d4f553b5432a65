#include "models/moe_block.h"

#include "absl/strings/str_cat.h"
#include "kernels/ops.h"

namespace weft::models {

struct MoeBlock::Saved : LayerSaved {
  Tensor x;        // [N, D]
  Tensor probs;    // [N, E] router softmax
  Tensor idx;      // [N, k] i32 chosen experts
  Tensor weights;  // [N, k] renormalised router weights
  ExpertRouting routing;
  Tensor y_sorted;  // [N*k, D] expert outputs, rows sorted by expert
  std::vector<SwiGluMlp::Saved> experts;
};

ExpertRouting ExpertRouting::from_choices(const Tensor& idx, int64_t num_experts) {
  const std::vector<int64_t> choice = idx.to_ints();  // [N*k]
  ExpertRouting r;
  r.expert_begin.assign(num_experts + 1, 0);
  for (int64_t e : choice) ++r.expert_begin[e + 1];
  for (int64_t e = 0; e < num_experts; ++e) r.expert_begin[e + 1] += r.expert_begin[e];
  std::vector<int64_t> next(r.expert_begin.begin(), r.expert_begin.end() - 1);
  r.row_of.resize(choice.size());
  for (size_t i = 0; i < choice.size(); ++i) r.row_of[i] = next[choice[i]]++;
  return r;
}

MoeBlock::MoeBlock(const io::ModelConfig& config, int64_t layer, const TpContext& tp)
    : router_(absl::StrCat("model.layers.", layer, ".block_sparse_moe.gate"), config.hidden_size,
              config.num_local_experts, false),
      top_k_(static_cast<int>(config.num_experts_per_tok)),
      tp_(tp) {
  for (int64_t e = 0; e < config.num_local_experts; ++e) {
    const std::string prefix =
        absl::StrCat("model.layers.", layer, ".block_sparse_moe.experts.", e, ".");
    experts_.push_back(std::make_unique<SwiGluMlp>(prefix + "w1", prefix + "w3", prefix + "w2",
                                                   config.hidden_size, config.intermediate_size,
                                                   tp.even()));
  }
}

Tensor MoeBlock::forward(const Tensor& x, SavedPtr* saved) const {
  const int64_t n = x.dim(0), k = top_k_, num_experts = static_cast<int64_t>(experts_.size());
  const Tensor logits = router_.forward(x);  // [N, E]
  Tensor probs = Tensor::empty(logits.shape());
  Tensor idx = Tensor::empty({n, k}, DType::kI32);
  Tensor weights = Tensor::empty({n, k});
  kernels::topk_router_forward(logits, top_k_, /*renormalize=*/true, probs, idx, weights);
  ExpertRouting routing = ExpertRouting::from_choices(idx, num_experts);

  // Permute: row row_of[n*k + j] of x_sorted is token n.
  Tensor x_sorted = Tensor::empty({n * k, x.dim(1)});  // [N*k, D]
  for (int64_t i = 0; i < n * k; ++i) {
    x_sorted.slice(routing.row_of[i], routing.row_of[i] + 1).copy_from(x.slice(i / k, i / k + 1));
  }
  Tensor y_sorted = Tensor::empty(x_sorted.shape());  // [N*k, D]
  std::vector<SwiGluMlp::Saved> expert_saved(saved != nullptr ? num_experts : 0);
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t begin = routing.expert_begin[e], end = routing.expert_begin[e + 1];
    if (begin == end) continue;
    Tensor y_e = y_sorted.slice(begin, end);
    experts_[e]->forward_into(x_sorted.slice(begin, end), y_e,
                              saved != nullptr ? &expert_saved[e] : nullptr);
  }

  // Un-permute with the router weights: y_n = sum_j w_{n,j} y_sorted[row_of[n*k + j]].
  Tensor y = Tensor::zeros(x.shape());  // [N, D]
  const std::vector<float> w = weights.to_floats();
  for (int64_t i = 0; i < n * k; ++i) {
    Tensor y_n = y.slice(i / k, i / k + 1);
    kernels::add_(y_n, y_sorted.slice(routing.row_of[i], routing.row_of[i] + 1), w[i]);
  }

  if (saved != nullptr) {
    auto s = std::make_unique<Saved>();
    s->x = x;
    s->probs = std::move(probs);
    s->idx = std::move(idx);
    s->weights = std::move(weights);
    s->routing = std::move(routing);
    s->y_sorted = std::move(y_sorted);
    s->experts = std::move(expert_saved);
    *saved = std::move(s);
  }
  return y;
}

Tensor MoeBlock::backward(LayerSaved& saved_base, const Tensor& dy) {
  auto& s = static_cast<Saved&>(saved_base);
  const int64_t n = s.x.dim(0), k = top_k_, num_experts = static_cast<int64_t>(experts_.size());
  const std::vector<int64_t>& row_of = s.routing.row_of;
  const std::vector<float> w = s.weights.to_floats();

  // dw_{n,j} = dy_n . y_sorted[row]; dy_sorted[row] = w_{n,j} dy_n.
  Tensor dweights = Tensor::empty({n * k, 1});           // [N*k, 1] = [N, k]
  Tensor dy_sorted = Tensor::empty(s.y_sorted.shape());  // [N*k, D]
  for (int64_t i = 0; i < n * k; ++i) {
    const Tensor dy_n = dy.slice(i / k, i / k + 1);  // [1, D]
    Tensor dw = dweights.slice(i, i + 1);
    kernels::gemm(dy_n, false, s.y_sorted.slice(row_of[i], row_of[i] + 1), true, dw);
    Tensor dy_row = dy_sorted.slice(row_of[i], row_of[i] + 1);
    dy_row.copy_from(dy_n);
    kernels::scale_(dy_row, w[i]);
  }

  Tensor dx_sorted = Tensor::empty(dy_sorted.shape());  // [N*k, D]
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t begin = s.routing.expert_begin[e], end = s.routing.expert_begin[e + 1];
    if (begin == end) continue;
    Tensor dx_e = dx_sorted.slice(begin, end);
    experts_[e]->backward_into(s.experts[e], dy_sorted.slice(begin, end), dx_e);
  }

  // Each tp rank's y_sorted holds its features' share: the whole dweights is their sum.
  if (tp_.size > 1) tp_.group->all_reduce(dweights);
  Tensor dlogits = Tensor::empty(s.probs.shape());  // [N, E]
  kernels::topk_router_backward(s.probs, s.idx, s.weights, dweights.view({n, k}), true, dlogits);
  // The router's dx is whole on every tp rank: one rank adds it, so the tp sum counts it once.
  Tensor dx = Tensor::zeros(s.x.shape());  // [N, D]
  router_.backward(s.x, dlogits, tp_.rank == 0 ? &dx : nullptr, false);
  for (int64_t i = 0; i < n * k; ++i) {
    Tensor dx_n = dx.slice(i / k, i / k + 1);
    kernels::add_(dx_n, dx_sorted.slice(row_of[i], row_of[i] + 1));
  }
  return dx;
}

void MoeBlock::collect_params(std::vector<Param*>& out) {
  router_.collect_params(out);
  for (auto& expert : experts_) expert->collect_params(out);
}

}  // namespace weft::models
