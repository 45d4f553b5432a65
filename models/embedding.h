// Token embedding: model.embed_tokens.weight [V, D]. With tied embeddings the LM head reads the
// same Param and adds its gradient into it.
#pragma once

#include <cstdint>
#include <vector>

#include "models/param.h"

namespace weft::models {

class Embedding {
 public:
  Embedding(int64_t vocab, int64_t hidden);

  // ids [N] (i32/i64) -> [N, D].
  [[nodiscard]] Tensor forward(const Tensor& ids) const;
  // Adds dy [N, D] into the rows of the table that `ids` selected.
  void backward(const Tensor& ids, const Tensor& dy);

  void collect_params(std::vector<Param*>& out) { out.push_back(&table_); }
  [[nodiscard]] Param& table() { return table_; }

 private:
  Param table_;  // [V, D]
};

}  // namespace weft::models
