// The LM head: logits = x @ W^T with W "lm_head.weight" [V, D], or the embedding table when
// the embeddings are tied (then its gradient is added into the embedding's).
#pragma once

#include <cstdint>
#include <vector>

#include "models/param.h"

namespace weft::models {

class LmHead {
 public:
  // tied == nullptr: own weight; else the embedding table to share.
  LmHead(int64_t vocab, int64_t hidden, Param* tied);
  LmHead(const LmHead&) = delete;
  LmHead& operator=(const LmHead&) = delete;

  // x [N, D] -> logits [N, V].
  [[nodiscard]] Tensor forward(const Tensor& x) const;
  // dlogits [N, V] -> dx [N, D]; adds dW += dlogits^T x.
  [[nodiscard]] Tensor backward(const Tensor& x, const Tensor& dlogits);

  // The head's own parameter (none when tied).
  void collect_params(std::vector<Param*>& out);

 private:
  Param own_;      // [V, D]; undefined when tied
  Param* weight_;  // &own_ or the embedding table
};

}  // namespace weft::models
