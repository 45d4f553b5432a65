// The LM head: logits = x @ W^T with W "lm_head.weight" [V, D], or the embedding table when
// the embeddings are tied (then its gradient is added into the embedding's). Vocabulary-parallel
// under tp: this rank computes the logits of its vocabulary block [vocab_start(), + V_r), V_r
// = shard_extent(V, tp.vocab()).length (the padded ids past V have no row, hence no logit), and
// dx is a partial sum for the caller's tp region.
#pragma once

#include <cstdint>
#include <vector>

#include "models/param.h"
#include "models/sharding.h"

namespace weft::models {

class LmHead {
 public:
  // How the head gets its weight.
  enum class Weight {
    kOwn,       // "lm_head.weight"
    kTied,      // the embedding table on this rank (`tied`)
    kTiedCopy,  // tied, but the embedding lives on another pipeline stage: a copy of
                // "model.embed_tokens.weight" kept in sync by the model (spec.replica = 1:
                // the first stage's copy is the one to save)
  };
  LmHead(int64_t vocab, int64_t hidden, const TpShard& shard, Weight weight, Param* tied);
  LmHead(const LmHead&) = delete;
  LmHead& operator=(const LmHead&) = delete;

  // x [N, D] -> logits [N, V_r].
  [[nodiscard]] Tensor forward(const Tensor& x) const;
  // dlogits [N, V_r] -> dx [N, D] (partial under tp); adds dW += dlogits^T x.
  [[nodiscard]] Tensor backward(const Tensor& x, const Tensor& dlogits);

  // The head's own parameter (none when tied to this rank's embedding).
  void collect_params(std::vector<Param*>& out);
  [[nodiscard]] int64_t vocab_start() const { return weight_->spec.offset; }
  [[nodiscard]] Param& weight() { return *weight_; }

 private:
  Param own_;      // [V_r, D]; undefined when tied
  Param* weight_;  // &own_ or the embedding table
};

}  // namespace weft::models
