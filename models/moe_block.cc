#include "models/moe_block.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/ops.h"
#include "models/moe_block_state.h"
#include "parallel/expert_dispatch.h"
#include "parallel/grad_sync.h"

namespace weft::models {

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

std::vector<bool> capacity_keep(const Tensor& idx, int64_t sequences, int64_t num_experts,
                                double factor) {
  const std::vector<int64_t> choice = idx.to_ints();  // [N*k]
  const int64_t k = idx.dim(1), len = idx.dim(0) / sequences;
  const auto capacity = static_cast<int64_t>(
      std::ceil(factor * static_cast<double>(len * k) / static_cast<double>(num_experts)));
  std::vector<bool> keep(choice.size());
  for (int64_t s = 0; s < sequences; ++s) {
    std::vector<int64_t> taken(num_experts, 0);
    for (int64_t i = s * len * k; i < (s + 1) * len * k; ++i) {
      keep[i] = taken[choice[i]]++ < capacity;
    }
  }
  return keep;
}

MoeBlock::MoeBlock(const io::ModelConfig& config, int64_t layer, const TpContext& tp,
                   const ExpertContext& experts)
    : router_(absl::StrCat("model.layers.", layer, ".block_sparse_moe.gate"), config.hidden_size,
              config.num_local_experts, false),
      top_k_(static_cast<int>(config.num_experts_per_tok)),
      num_experts_(config.num_local_experts),
      tp_(tp),
      ep_(experts),
      num_layers_(config.num_hidden_layers) {
  const int64_t e_count = num_experts_;
  auto make = [&](int64_t e, const TpShard& shard) {
    const std::string prefix =
        absl::StrCat("model.layers.", layer, ".block_sparse_moe.experts.", e, ".");
    return std::make_unique<SwiGluMlp>(prefix + "w1", prefix + "w3", prefix + "w2",
                                       config.hidden_size, config.intermediate_size, shard);
  };
  if (!ep_.dispatches()) {
    for (int64_t e = 0; e < e_count; ++e) experts_.push_back(make(e, tp.even()));
    return;
  }
  const std::vector<int64_t> placement = ep_.placement_of(layer, e_count);
  const int64_t local = e_count / ep_.ep;
  owner_.assign(e_count, 0);
  slot_.assign(e_count, 0);
  for (int64_t i = 0; i < e_count; ++i) {
    owner_[placement[i]] = static_cast<int>(i / local);
    slot_[placement[i]] = i % local;
  }
  for (int64_t j = 0; j < local; ++j) {
    experts_.push_back(make(placement[ep_.ep_rank * local + j], {ep_.etp, ep_.etp_rank, 0}));
  }
  // Expert weights live on the ep ranks that host them: a checkpoint or an export takes each
  // from edp rank 0 of its host (split over etp when etp > 1).
  std::vector<Param*> params;
  for (auto& expert : experts_) expert->collect_params(params);
  for (Param* p : params) p->spec.group = ep_.etp > 1 ? "etp" : "ep";
}

MoeBlock::Routed MoeBlock::route(const Tensor& x, int64_t sequences) const {
  const int64_t n = x.dim(0), k = top_k_;
  const Tensor logits = router_.forward(x);  // [n, E]
  Routed r;
  r.probs = Tensor::empty(logits.shape());
  r.idx = Tensor::empty({n, k}, DType::kI32);
  r.weights = Tensor::empty({n, k});
  kernels::topk_router_forward(logits, top_k_, /*renormalize=*/true, r.probs, r.idx, r.weights);
  if (sequences > 0 && ep_.capacity_factor > 0) {
    r.keep = capacity_keep(r.idx, sequences, num_experts_, ep_.capacity_factor);
  } else {
    r.keep.assign(n * k, true);
  }
  if (!recomputing_) {
    if (routing_sink_) routing_sink_(r.idx);
    counts_.routed += n * k;
    counts_.dropped += std::count(r.keep.begin(), r.keep.end(), false);
  }
  return r;
}

std::vector<float> MoeBlock::balance(const Routed& routed, bool counted) const {
  if (fixed_balance_ != nullptr) return *fixed_balance_;
  if (!(aux_scale_ > 0)) return last_balance_ = {};
  const int64_t e_count = num_experts_;
  // [count_e..., sum of p_e..., rows]
  std::vector<float> stats(2 * e_count + 1, 0.0f);
  if (counted) {
    const std::vector<int64_t> choice = routed.idx.to_ints();
    const std::vector<float> p = routed.probs.to_floats();
    for (int64_t e : choice) stats[e] += 1;
    for (size_t i = 0; i < p.size(); ++i)
      stats[e_count + static_cast<int64_t>(i) % e_count] += p[i];
    stats[2 * e_count] = static_cast<float>(routed.idx.dim(0));
  }
  Tensor t = Tensor::from_floats(stats, {2 * e_count + 1});
  for (comm::Communicator* g : ep_.token_groups) g->all_reduce(t);
  stats = t.to_floats();
  const double rows = stats[2 * e_count];
  std::vector<float> dprob(e_count, 0.0f);
  if (rows == 0) return recomputing_ ? dprob : last_balance_ = dprob;
  double aux = 0;
  for (int64_t e = 0; e < e_count; ++e) {
    const double f = stats[e] / rows, p = stats[e_count + e] / rows;
    aux += static_cast<double>(e_count) * f * p;
    dprob[e] = static_cast<float>(aux_scale_ * static_cast<double>(e_count) * f /
                                  (static_cast<double>(num_layers_) * rows));
  }
  if (!recomputing_) {
    counts_.aux += aux;
    last_balance_ = dprob;
  }
  return dprob;
}

void MoeBlock::add_aux_grad(const Routed& routed, const std::vector<float>& dprob,
                            Tensor& dlogits) {
  if (dprob.empty() || routed.probs.dim(0) == 0) return;
  const int64_t n = routed.probs.dim(0), e_count = routed.probs.dim(1);
  std::vector<float> rows(n * e_count);
  for (int64_t i = 0; i < n * e_count; ++i) rows[i] = dprob[i % e_count];
  const Tensor dp = Tensor::from_floats(rows, {n, e_count}).to(dlogits.device());
  Tensor extra = Tensor::empty(dlogits.shape(), DType::kF32, dlogits.device());
  kernels::softmax_backward(routed.probs, dp, extra);
  kernels::add_(dlogits, extra);
}

Tensor MoeBlock::router_backward(const Saved& s, const Tensor& dweights, bool with_dx) {
  Tensor dlogits = Tensor::empty(s.routed.probs.shape());  // [n, E]
  kernels::topk_router_backward(s.routed.probs, s.routed.idx, s.routed.weights, dweights, true,
                                dlogits);
  add_aux_grad(s.routed, s.aux_dprob, dlogits);
  Tensor dx = Tensor::zeros(s.x.shape());  // [n, D]
  router_.backward(s.x, dlogits, with_dx ? &dx : nullptr, false);
  return dx;
}

Tensor MoeBlock::forward(const Tensor& x, SavedPtr* saved) const {
  return plain_forward(x, 0, saved);
}

Tensor MoeBlock::forward_in_region(const TokenBatch& batch, const Tensor& x,
                                   const parallel::TensorParallelRegion& region,
                                   SavedPtr* saved) const {
  // Capacity is per whole sequence: training, evaluation and a prefill from position 0.
  auto whole_sequences = [&](int64_t rows) {
    return batch.paged == nullptr && batch.offset == 0 && rows == batch.tokens() ? batch.batch : 0;
  };
  if (!ep_.dispatches()) {
    const Tensor xin = region.enter(x);  // [N, D]
    return region.leave(plain_forward(xin, whole_sequences(xin.dim(0)), saved));
  }
  auto s = std::make_unique<Saved>();
  // Rows replicated over tp: each tp rank routes its share of them (share_rows).
  const bool shared = region.size() > 1 && !region.sequence_parallel();
  Routed routed = route(x, whole_sequences(x.dim(0)));
  Tensor own = x;
  if (shared) {
    share_rows(routed, *s);
    const int64_t k = top_k_;
    own = parallel::take_rows(x, s->own);
    routed.probs = parallel::take_rows(routed.probs, s->own);
    routed.idx = parallel::take_rows(routed.idx, s->own);
    routed.weights = parallel::take_rows(routed.weights, s->own);
    std::vector<bool> keep;
    for (int64_t t : s->own) {
      for (int64_t j = 0; j < k; ++j) keep.push_back(routed.keep[t * k + j]);
    }
    routed.keep = std::move(keep);
  }
  s->aux_dprob = balance(routed, /*counted=*/true);  // own rows: no other rank has them
  Tensor y = ep_.speculative ? speculative_forward(own, std::move(routed), s.get())
                             : dispatch_forward(own, std::move(routed), s.get());
  if (shared) {
    y = parallel::put_rows(parallel::all_gather_rows_v(*tp_.group, y, s->tp_rows), s->tp_order,
                           x.dim(0));
  }
  if (saved != nullptr) *saved = std::move(s);
  return y;
}

void MoeBlock::share_rows(const Routed& routed, Saved& s) const {
  const int tp = tp_.size;
  const int64_t n = routed.idx.dim(0), k = top_k_;
  std::vector<std::vector<int64_t>> rows_of(tp);
  if (!ep_.speculative) {
    for (int r = 0; r < tp; ++r) {
      const parallel::RowRange range = parallel::shard_rows(n, tp, r);
      for (int64_t t = range.begin; t < range.end; ++t) rows_of[r].push_back(t);
    }
  } else {
    // Each token to the tp rank whose ep rank hosts most of its kept choices (ties and tokens
    // with none there: the tp rank with the fewest rows so far, then the lowest). Every tp rank
    // computes the same assignment from the same replicated routing.
    const std::vector<int64_t> choice = routed.idx.to_ints();
    for (int64_t t = 0; t < n; ++t) {
      int best = -1;
      int64_t best_hits = 0;
      for (int r = 0; r < tp; ++r) {
        int64_t hits = 0;
        for (int64_t j = 0; j < k; ++j) {
          hits += routed.keep[t * k + j] && owner_[choice[t * k + j]] == ep_.tp_ep[r];
        }
        if (hits > best_hits ||
            (hits == best_hits && best >= 0 && rows_of[r].size() < rows_of[best].size())) {
          best = r;
          best_hits = hits;
        }
        if (best < 0) best = r;
      }
      rows_of[best].push_back(t);
    }
  }
  for (int r = 0; r < tp; ++r) {
    s.tp_rows.push_back(static_cast<int64_t>(rows_of[r].size()));
    s.tp_order.insert(s.tp_order.end(), rows_of[r].begin(), rows_of[r].end());
  }
  s.own = rows_of[tp_.rank];
}

Tensor MoeBlock::backward_in_region(LayerSaved& saved_base, const Tensor& dy,
                                    const parallel::TensorParallelRegion& region) {
  auto& s = static_cast<Saved&>(saved_base);
  if (!ep_.dispatches()) return region.enter_backward(backward(s, region.leave_backward(dy)));
  auto run = [&](const Tensor& d) {
    return ep_.speculative ? speculative_backward(s, d) : dispatch_backward(s, d);
  };
  if (s.tp_rows.empty()) return run(dy);
  const Tensor dx = run(parallel::take_rows(dy, s.own));
  return parallel::put_rows(parallel::all_gather_rows_v(*tp_.group, dx, s.tp_rows), s.tp_order,
                            dy.dim(0));
}

Tensor MoeBlock::dispatch_forward(const Tensor& x, Routed routed, Saved* s) const {
  const int64_t n = x.dim(0), k = top_k_, local = static_cast<int64_t>(experts_.size());
  const std::vector<int64_t> choice = routed.idx.to_ints();  // [n*k]
  // Send order: by (destination ep rank, its local expert), stable in choice order.
  std::vector<int64_t> counts(ep_.ep * local, 0);
  for (int64_t i = 0; i < n * k; ++i) {
    if (routed.keep[i]) ++counts[owner_[choice[i]] * local + slot_[choice[i]]];
  }
  std::vector<int64_t> next(counts.size(), 0);
  for (size_t b = 1; b < counts.size(); ++b) next[b] = next[b - 1] + counts[b - 1];
  const int64_t sent = counts.empty() ? 0 : next.back() + counts.back();
  s->send_row.assign(n * k, -1);
  Tensor x_send = Tensor::empty({sent, x.dim(1)}, x.dtype(), x.device());  // [S, D]
  for (int64_t i = 0; i < n * k; ++i) {
    if (!routed.keep[i]) continue;
    const int64_t row = next[owner_[choice[i]] * local + slot_[choice[i]]]++;
    s->send_row[i] = row;
    x_send.slice(row, row + 1).copy_from(x.slice(i / k, i / k + 1));
  }
  for (int d = 0; d < ep_.ep; ++d) {
    if (d == ep_.ep_rank) continue;
    for (int64_t j = 0; j < local; ++j) {
      if (!recomputing_) counts_.remote_rows += counts[d * local + j];
    }
  }
  s->dispatch = parallel::ExpertDispatch(ep_.ep_group, ep_.etp_group, counts, local);
  const Tensor xg = s->dispatch.dispatch(x_send);  // [R, D] grouped by local expert
  Tensor yg = Tensor::empty(xg.shape(), xg.dtype(), xg.device());
  s->experts.resize(local);
  const std::vector<int64_t>& begin = s->dispatch.expert_begin();
  for (int64_t j = 0; j < local; ++j) {
    if (begin[j] == begin[j + 1]) continue;
    Tensor y_j = yg.slice(begin[j], begin[j + 1]);
    experts_[j]->forward_into(xg.slice(begin[j], begin[j + 1]), y_j, &s->experts[j]);
  }
  s->y_sent = s->dispatch.combine(yg);  // [S, D]
  Tensor y = Tensor::zeros(x.shape());  // [n, D]
  const std::vector<float> w = routed.weights.to_floats();
  for (int64_t i = 0; i < n * k; ++i) {
    if (s->send_row[i] < 0) continue;
    Tensor y_n = y.slice(i / k, i / k + 1);
    kernels::add_(y_n, s->y_sent.slice(s->send_row[i], s->send_row[i] + 1), w[i]);
  }
  s->x = x;
  s->routed = std::move(routed);
  return y;
}

Tensor MoeBlock::dispatch_backward(Saved& s, const Tensor& dy) {
  const int64_t n = s.x.dim(0), k = top_k_, local = static_cast<int64_t>(experts_.size());
  const std::vector<float> w = s.routed.weights.to_floats();
  // dw_{n,j} = dy_n . y_sent[row] (0 when dropped); dy_send[row] = w_{n,j} dy_n.
  Tensor dweights = Tensor::zeros({n * k, 1});                                // [n*k, 1] = [n, k]
  Tensor dy_send = Tensor::empty(s.y_sent.shape(), dy.dtype(), dy.device());  // [S, D]
  for (int64_t i = 0; i < n * k; ++i) {
    const int64_t row = s.send_row[i];
    if (row < 0) continue;
    const Tensor dy_n = dy.slice(i / k, i / k + 1);  // [1, D]
    Tensor dw = dweights.slice(i, i + 1);
    kernels::gemm(dy_n, false, s.y_sent.slice(row, row + 1), true, dw);
    Tensor dy_row = dy_send.slice(row, row + 1);
    dy_row.copy_from(dy_n);
    kernels::scale_(dy_row, w[i]);
  }
  const Tensor dyg = s.dispatch.dispatch(dy_send);  // [R, D]
  Tensor dxg = Tensor::zeros(dyg.shape());
  const std::vector<int64_t>& begin = s.dispatch.expert_begin();
  for (int64_t j = 0; j < local; ++j) {
    if (begin[j] == begin[j + 1]) continue;
    Tensor dx_j = dxg.slice(begin[j], begin[j + 1]);
    experts_[j]->backward_into(s.experts[j], dyg.slice(begin[j], begin[j + 1]), dx_j);
  }
  const Tensor dx_send = s.dispatch.combine(dxg);  // [S, D], summed over etp

  Tensor dx = router_backward(s, dweights.view({n, k}), /*with_dx=*/true);  // [n, D]
  for (int64_t i = 0; i < n * k; ++i) {
    if (s.send_row[i] < 0) continue;
    Tensor dx_n = dx.slice(i / k, i / k + 1);
    kernels::add_(dx_n, dx_send.slice(s.send_row[i], s.send_row[i] + 1));
  }
  return dx;
}

Tensor MoeBlock::plain_forward(const Tensor& x, int64_t sequences, SavedPtr* saved) const {
  const int64_t n = x.dim(0), k = top_k_;
  Routed routed = route(x, sequences);
  // The rows are the same on every tp rank: tp rank 0 counts them.
  std::vector<float> aux_dprob = balance(routed, tp_.rank == 0);
  ExpertRouting routing = ExpertRouting::from_choices(routed.idx, num_experts_);

  // Permute: row row_of[n*k + j] of x_sorted is token n (dropped choices too: their rows are
  // computed but never summed, which keeps the sorted layout simple).
  Tensor x_sorted = Tensor::empty({n * k, x.dim(1)});  // [N*k, D]
  for (int64_t i = 0; i < n * k; ++i) {
    x_sorted.slice(routing.row_of[i], routing.row_of[i] + 1).copy_from(x.slice(i / k, i / k + 1));
  }
  Tensor y_sorted = Tensor::empty(x_sorted.shape());  // [N*k, D]
  std::vector<SwiGluMlp::Saved> expert_saved(saved != nullptr ? num_experts_ : 0);
  for (int64_t e = 0; e < num_experts_; ++e) {
    const int64_t begin = routing.expert_begin[e], end = routing.expert_begin[e + 1];
    if (begin == end) continue;
    Tensor y_e = y_sorted.slice(begin, end);
    experts_[e]->forward_into(x_sorted.slice(begin, end), y_e,
                              saved != nullptr ? &expert_saved[e] : nullptr);
  }

  // Un-permute with the router weights: y_n = sum_j w_{n,j} y_sorted[row_of[n*k + j]].
  Tensor y = Tensor::zeros(x.shape());  // [N, D]
  const std::vector<float> w = routed.weights.to_floats();
  for (int64_t i = 0; i < n * k; ++i) {
    if (!routed.keep[i]) continue;
    Tensor y_n = y.slice(i / k, i / k + 1);
    kernels::add_(y_n, y_sorted.slice(routing.row_of[i], routing.row_of[i] + 1), w[i]);
  }

  if (saved != nullptr) {
    auto s = std::make_unique<Saved>();
    s->x = x;
    s->routed = std::move(routed);
    s->routing = std::move(routing);
    s->aux_dprob = std::move(aux_dprob);
    s->y_sorted = std::move(y_sorted);
    s->experts = std::move(expert_saved);
    *saved = std::move(s);
  }
  return y;
}

Tensor MoeBlock::backward(LayerSaved& saved_base, const Tensor& dy) {
  auto& s = static_cast<Saved&>(saved_base);
  const int64_t n = s.x.dim(0), k = top_k_;
  const std::vector<int64_t>& row_of = s.routing.row_of;
  const std::vector<float> w = s.routed.weights.to_floats();

  // dw_{n,j} = dy_n . y_sorted[row]; dy_sorted[row] = w_{n,j} dy_n (both 0 when dropped).
  Tensor dweights = Tensor::zeros({n * k, 1});           // [N*k, 1] = [N, k]
  Tensor dy_sorted = Tensor::zeros(s.y_sorted.shape());  // [N*k, D]
  for (int64_t i = 0; i < n * k; ++i) {
    if (!s.routed.keep[i]) continue;
    const Tensor dy_n = dy.slice(i / k, i / k + 1);  // [1, D]
    Tensor dw = dweights.slice(i, i + 1);
    kernels::gemm(dy_n, false, s.y_sorted.slice(row_of[i], row_of[i] + 1), true, dw);
    Tensor dy_row = dy_sorted.slice(row_of[i], row_of[i] + 1);
    dy_row.copy_from(dy_n);
    kernels::scale_(dy_row, w[i]);
  }

  Tensor dx_sorted = Tensor::empty(dy_sorted.shape());  // [N*k, D]
  for (int64_t e = 0; e < num_experts_; ++e) {
    const int64_t begin = s.routing.expert_begin[e], end = s.routing.expert_begin[e + 1];
    if (begin == end) continue;
    Tensor dx_e = dx_sorted.slice(begin, end);
    experts_[e]->backward_into(s.experts[e], dy_sorted.slice(begin, end), dx_e);
  }

  // Each tp rank's y_sorted holds its features' share: the whole dweights is their sum.
  if (tp_.size > 1) tp_.group->all_reduce(dweights);
  // The router's dx is whole on every tp rank: one rank adds it, so the tp sum counts it once.
  Tensor dx = router_backward(s, dweights.view({n, k}), /*with_dx=*/tp_.rank == 0);  // [N, D]
  for (int64_t i = 0; i < n * k; ++i) {
    if (!s.routed.keep[i]) continue;
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
