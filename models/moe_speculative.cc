// MoeBlock's speculative dispatch (docs/algorithms.md "Speculative MoE"): one row per (token,
// destination ep rank) instead of one per (token, choice).
#include <algorithm>

#include "kernels/ops.h"
#include "models/moe_block.h"
#include "models/moe_block_state.h"
#include "parallel/expert_dispatch.h"

namespace weft::models {

// One row per (token, destination ep rank): the row carries x and, in a side tensor [S, 2k], the
// token's choices there (local expert slot or -1, router weight). The destination runs those
// experts and returns one row, sum_j w_j expert_j(x) over its choices, in choice order. With
// k = 2 the sums equal the one-row-per-choice dispatch bit for bit (a + b = b + a).
Tensor MoeBlock::speculative_forward(const Tensor& x, Routed routed, Saved* s) const {
  const int64_t n = x.dim(0), k = top_k_, local = static_cast<int64_t>(experts_.size());
  const int p = ep_.ep;
  const std::vector<int64_t> choice = routed.idx.to_ints();  // [n*k]
  const std::vector<float> w = routed.weights.to_floats();
  // Send rows by destination, then token.
  std::vector<std::vector<int64_t>> tokens_to(p);
  for (int64_t t = 0; t < n; ++t) {
    std::vector<bool> to(p, false);
    for (int64_t j = 0; j < k; ++j) {
      if (routed.keep[t * k + j]) to[owner_[choice[t * k + j]]] = true;
    }
    for (int d = 0; d < p; ++d) {
      if (to[d]) tokens_to[d].push_back(t);
    }
  }
  s->send_rows.assign(p, 0);
  std::vector<float> meta;  // [S, 2k]: slot (or -1) and weight per choice
  for (int d = 0; d < p; ++d) {
    s->send_rows[d] = static_cast<int64_t>(tokens_to[d].size());
    for (int64_t t : tokens_to[d]) {
      s->send_token.push_back(t);
      for (int64_t j = 0; j < k; ++j) {
        const int64_t i = t * k + j;
        const bool here = routed.keep[i] && owner_[choice[i]] == d;
        meta.push_back(here ? static_cast<float>(slot_[choice[i]]) : -1.0f);
        meta.push_back(w[i]);
      }
    }
  }
  const auto sent = static_cast<int64_t>(s->send_token.size());
  if (!recomputing_) counts_.remote_rows += sent - s->send_rows[ep_.ep_rank];
  Tensor counts = Tensor::empty({p}, DType::kI64);
  ep_.ep_group->all_to_all(Tensor::from_ints(s->send_rows, {p}), counts);
  s->recv_rows = counts.to_ints();
  int64_t received = 0;
  for (int64_t r : s->recv_rows) received += r;
  Tensor x_recv = Tensor::empty({received, x.dim(1)}, x.dtype(), x.device());  // [R, D]
  ep_.ep_group->all_to_all_v(parallel::take_rows(x, s->send_token), s->send_rows, x_recv,
                             s->recv_rows);
  Tensor meta_recv = Tensor::empty({received, 2 * k});  // [R, 2k]
  ep_.ep_group->all_to_all_v(Tensor::from_floats(meta, {sent, 2 * k}), s->send_rows, meta_recv,
                             s->recv_rows);
  // The local choices, grouped by expert (stable in received-row order).
  const std::vector<float> m = meta_recv.to_floats();
  s->slot_begin.assign(local + 1, 0);
  for (int64_t r = 0; r < received; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      if (m[(r * k + j) * 2] >= 0) ++s->slot_begin[static_cast<int64_t>(m[(r * k + j) * 2]) + 1];
    }
  }
  for (int64_t l = 0; l < local; ++l) s->slot_begin[l + 1] += s->slot_begin[l];
  std::vector<int64_t> next(s->slot_begin.begin(), s->slot_begin.end() - 1);
  const int64_t chosen = s->slot_begin.back();
  s->choice_row.assign(chosen, 0);
  s->choice_j.assign(chosen, 0);
  s->choice_w.assign(chosen, 0);
  for (int64_t r = 0; r < received; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      const float slot = m[(r * k + j) * 2];
      if (slot < 0) continue;
      const int64_t c = next[static_cast<int64_t>(slot)]++;
      s->choice_row[c] = r;
      s->choice_j[c] = j;
      s->choice_w[c] = m[(r * k + j) * 2 + 1];
    }
  }
  const Tensor xg = parallel::take_rows(x_recv, s->choice_row);  // [C, D]
  s->y_choice = Tensor::empty(xg.shape(), xg.dtype(), xg.device());
  s->experts.resize(local);
  for (int64_t l = 0; l < local; ++l) {
    const int64_t b = s->slot_begin[l], e = s->slot_begin[l + 1];
    if (b == e) continue;
    Tensor y_l = s->y_choice.slice(b, e);
    experts_[l]->forward_into(xg.slice(b, e), y_l, &s->experts[l]);
  }
  // Each received row's weighted sum over its choices, in choice order.
  std::vector<std::vector<int64_t>> choices_of(received);  // choice ids by j
  for (int64_t c = 0; c < chosen; ++c) choices_of[s->choice_row[c]].push_back(c);
  Tensor y_recv = Tensor::zeros({received, x.dim(1)});  // [R, D]
  for (int64_t r = 0; r < received; ++r) {
    std::sort(choices_of[r].begin(), choices_of[r].end(),
              [&](int64_t a, int64_t b) { return s->choice_j[a] < s->choice_j[b]; });
    Tensor y_r = y_recv.slice(r, r + 1);
    for (int64_t c : choices_of[r]) kernels::add_(y_r, s->y_choice.slice(c, c + 1), s->choice_w[c]);
  }
  Tensor y_sent = Tensor::empty({sent, x.dim(1)}, x.dtype(), x.device());  // [S, D]
  ep_.ep_group->all_to_all_v(y_recv, s->recv_rows, y_sent, s->send_rows);
  Tensor y = Tensor::zeros(x.shape());  // [n, D]
  for (int64_t i = 0; i < sent; ++i) {
    Tensor y_t = y.slice(s->send_token[i], s->send_token[i] + 1);
    kernels::add_(y_t, y_sent.slice(i, i + 1));
  }
  s->x = x;
  s->routed = std::move(routed);
  return y;
}

Tensor MoeBlock::speculative_backward(Saved& s, const Tensor& dy) {
  const int64_t n = s.x.dim(0), k = top_k_, local = static_cast<int64_t>(experts_.size());
  const auto sent = static_cast<int64_t>(s.send_token.size());
  int64_t recv_total = 0;
  for (int64_t r : s.recv_rows) recv_total += r;
  // The output gradient rows go where the rows went; each destination weights them per choice.
  Tensor dy_recv = Tensor::empty({recv_total, dy.dim(1)}, dy.dtype(), dy.device());  // [R, D]
  ep_.ep_group->all_to_all_v(parallel::take_rows(dy, s.send_token), s.send_rows, dy_recv,
                             s.recv_rows);
  const int64_t chosen = s.slot_begin.back();
  Tensor dyg = parallel::take_rows(dy_recv, s.choice_row);  // [C, D]
  Tensor dw_recv = Tensor::zeros({recv_total, k});          // [R, k] dw of each choice
  for (int64_t c = 0; c < chosen; ++c) {
    Tensor dw =
        dw_recv.view({recv_total * k, 1})
            .slice(s.choice_row[c] * k + s.choice_j[c], s.choice_row[c] * k + s.choice_j[c] + 1);
    kernels::gemm(dyg.slice(c, c + 1), false, s.y_choice.slice(c, c + 1), true, dw);
    Tensor row = dyg.slice(c, c + 1);
    kernels::scale_(row, s.choice_w[c]);
  }
  Tensor dxg = Tensor::zeros(dyg.shape());  // [C, D]
  for (int64_t l = 0; l < local; ++l) {
    const int64_t b = s.slot_begin[l], e = s.slot_begin[l + 1];
    if (b == e) continue;
    Tensor dx_l = dxg.slice(b, e);
    experts_[l]->backward_into(s.experts[l], dyg.slice(b, e), dx_l);
  }
  Tensor dx_recv = Tensor::zeros({recv_total, dy.dim(1)});  // [R, D]
  for (int64_t c = 0; c < chosen; ++c) {
    Tensor dx_r = dx_recv.slice(s.choice_row[c], s.choice_row[c] + 1);
    kernels::add_(dx_r, dxg.slice(c, c + 1));
  }
  Tensor dx_sent = Tensor::empty({sent, dy.dim(1)}, dy.dtype(), dy.device());  // [S, D]
  ep_.ep_group->all_to_all_v(dx_recv, s.recv_rows, dx_sent, s.send_rows);
  Tensor dw_sent = Tensor::empty({sent, k});  // [S, k]
  ep_.ep_group->all_to_all_v(dw_recv, s.recv_rows, dw_sent, s.send_rows);

  // dweights[t, j]: each choice's dw came back on the one row of (t, its destination).
  Tensor dweights = Tensor::zeros({n, k});
  for (int64_t i = 0; i < sent; ++i) {
    Tensor row = dweights.slice(s.send_token[i], s.send_token[i] + 1);
    kernels::add_(row, dw_sent.slice(i, i + 1));
  }
  Tensor dx = router_backward(s, dweights, /*with_dx=*/true);  // [n, D]
  for (int64_t i = 0; i < sent; ++i) {
    Tensor dx_t = dx.slice(s.send_token[i], s.send_token[i] + 1);
    kernels::add_(dx_t, dx_sent.slice(i, i + 1));
  }
  return dx;
}

}  // namespace weft::models
