#include "models/attention_projections.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace weft::models {

namespace {

std::string proj_name(int64_t layer, const char* proj) {
  return absl::StrCat("model.layers.", layer, ".self_attn.", proj);
}

}  // namespace

AttentionProjections::AttentionProjections(const io::ModelConfig& config, int64_t layer,
                                           const TpContext& tp)
    : heads_(config.num_attention_heads / tp.size),
      kv_heads_(config.num_key_value_heads / tp.kv(config.num_key_value_heads).parts),
      head_dim_(config.head_dim),
      first_head_(tp.rank * heads_),
      q_proj_(proj_name(layer, "q_proj"), config.hidden_size,
              config.num_attention_heads * head_dim_, config.attention_bias, LinearSplit::kColumn,
              tp.even()),
      k_proj_(proj_name(layer, "k_proj"), config.hidden_size,
              config.num_key_value_heads * head_dim_, config.attention_bias, LinearSplit::kColumn,
              tp.kv(config.num_key_value_heads)),
      v_proj_(proj_name(layer, "v_proj"), config.hidden_size,
              config.num_key_value_heads * head_dim_, config.attention_bias, LinearSplit::kColumn,
              tp.kv(config.num_key_value_heads)),
      o_proj_(proj_name(layer, "o_proj"), config.num_attention_heads * head_dim_,
              config.hidden_size, false, LinearSplit::kRow, tp.even()) {}

QkvHeads AttentionProjections::project_qkv(const TokenBatch& batch, const Tensor& x) const {
  const int64_t b = batch.batch, t = batch.len, d = head_dim_;
  return {q_proj_.forward(x).view({b, t, heads_, d}), k_proj_.forward(x).view({b, t, kv_heads_, d}),
          v_proj_.forward(x).view({b, t, kv_heads_, d})};
}

Tensor AttentionProjections::backward_qkv(const Tensor& x, const QkvHeads& grads) {
  const int64_t n = x.dim(0);
  Tensor dx = Tensor::empty(x.shape());  // [N, D]
  q_proj_.backward(x, grads.q.view({n, -1}), &dx, false);
  k_proj_.backward(x, grads.k.view({n, -1}), &dx, true);
  v_proj_.backward(x, grads.v.view({n, -1}), &dx, true);
  return dx;
}

Tensor AttentionProjections::project_q(const TokenBatch& batch, const Tensor& x) const {
  return q_proj_.forward(x).view({batch.batch, batch.len, heads_, head_dim_});
}

QkvHeads AttentionProjections::project_kv(const TokenBatch& batch, const Tensor& x) const {
  const int64_t b = batch.batch, t = batch.len, d = head_dim_;
  return {Tensor(), k_proj_.forward(x).view({b, t, kv_heads_, d}),
          v_proj_.forward(x).view({b, t, kv_heads_, d})};
}

void AttentionProjections::backward_q(const Tensor& x, const Tensor& dq, Tensor& dx) {
  q_proj_.backward(x, dq.view({x.dim(0), -1}), &dx, true);
}

void AttentionProjections::backward_kv(const Tensor& x, const Tensor& dk, const Tensor& dv,
                                       Tensor& dx) {
  const int64_t n = x.dim(0);
  k_proj_.backward(x, dk.view({n, -1}), &dx, true);
  v_proj_.backward(x, dv.view({n, -1}), &dx, true);
}

Tensor AttentionProjections::project_out(const Tensor& o) const {
  return o_proj_.forward(o.view({-1, heads_ * head_dim_}));
}

Tensor AttentionProjections::backward_out(const Tensor& o, const Tensor& dy) {
  const Tensor o2 = o.view({-1, heads_ * head_dim_});  // [N, H*d]
  Tensor d_o = Tensor::empty(o.shape());               // [B, T, H, d]
  Tensor d_o2 = d_o.view(o2.shape());
  o_proj_.backward(o2, dy, &d_o2, false);
  return d_o;
}

QkvHeads AttentionProjections::zero_grads(const TokenBatch& batch) const {
  const int64_t b = batch.batch, t = batch.len, d = head_dim_;
  return {Tensor::zeros({b, t, heads_, d}), Tensor::zeros({b, t, kv_heads_, d}),
          Tensor::zeros({b, t, kv_heads_, d})};
}

void AttentionProjections::collect_params(std::vector<Param*>& out) {
  q_proj_.collect_params(out);
  k_proj_.collect_params(out);
  v_proj_.collect_params(out);
  o_proj_.collect_params(out);
}

}  // namespace weft::models
