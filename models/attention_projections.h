// The q/k/v/o projections shared by softmax and linear attention, and the head geometry:
// H query heads, Hkv key/value heads (GQA: H % Hkv == 0), head_dim d (may differ from D / H).
// Kept apart from the attention core so that parallel variants can swap the core alone.
// Under tensor parallelism q/k/v are column-parallel by heads (H/tp query heads from head
// first_head(); Hkv/tp KV heads, or one replicated KV head when tp > Hkv) and o is row-parallel:
// project_out returns partial sums that the caller's tp region reduces.
#pragma once

#include <cstdint>
#include <vector>

#include "models/linear.h"
#include "models/token_batch.h"
#include "models/tp_context.h"
#include "runtime/io/model_config.h"

namespace weft::models {

// Query, key and value heads of a batch: q [B, T, H, d], k and v [B, T, Hkv, d].
struct QkvHeads {
  Tensor q, k, v;
};

class AttentionProjections {
 public:
  // HF names "model.layers.{layer}.self_attn.{q,k,v,o}_proj". q/k/v carry a bias when
  // config.attention_bias (Qwen2); o_proj never does (the config parser refuses Llama's
  // attention_bias, which would add one).
  AttentionProjections(const io::ModelConfig& config, int64_t layer, const TpContext& tp);

  // x [N, D] -> q, k, v heads.
  [[nodiscard]] QkvHeads project_qkv(const TokenBatch& batch, const Tensor& x) const;
  // The gradients of q, k, v (same shapes) -> dx [N, D]; adds into the q/k/v parameter grads.
  [[nodiscard]] Tensor backward_qkv(const Tensor& x, const QkvHeads& grads);

  // The halves of the two above for StreamBP, whose chunks take their queries apart from the
  // whole sequence's keys and values: q [B, T, H, d]; k and v (q left empty); dx [N, D] += the
  // input gradient through q (or through k and v), adding into their parameter gradients.
  [[nodiscard]] Tensor project_q(const TokenBatch& batch, const Tensor& x) const;
  [[nodiscard]] QkvHeads project_kv(const TokenBatch& batch, const Tensor& x) const;
  void backward_q(const Tensor& x, const Tensor& dq, Tensor& dx);
  void backward_kv(const Tensor& x, const Tensor& dk, const Tensor& dv, Tensor& dx);

  // o [B, T, H, d] -> y [N, D].
  [[nodiscard]] Tensor project_out(const Tensor& o) const;
  // dy [N, D] -> do [B, T, H, d]; adds into the o_proj grads.
  [[nodiscard]] Tensor backward_out(const Tensor& o, const Tensor& dy);

  // Zero tensors shaped like q, k, v of `batch` (the attention backward kernels add into them).
  [[nodiscard]] QkvHeads zero_grads(const TokenBatch& batch) const;

  void collect_params(std::vector<Param*>& out);
  // This rank's heads (local counts) and the global index of its first query head.
  [[nodiscard]] int64_t heads() const { return heads_; }
  [[nodiscard]] int64_t first_head() const { return first_head_; }
  [[nodiscard]] int64_t kv_heads() const { return kv_heads_; }
  [[nodiscard]] int64_t head_dim() const { return head_dim_; }

 private:
  int64_t heads_;
  int64_t kv_heads_;
  int64_t head_dim_;
  int64_t first_head_;
  Linear q_proj_;  // [H*d, D] local
  Linear k_proj_;  // [Hkv*d, D] local
  Linear v_proj_;  // [Hkv*d, D] local
  Linear o_proj_;  // [D, H*d] local
};

}  // namespace weft::models
