// Token embedding: model.embed_tokens.weight [V, D]. With tied embeddings the LM head reads the
// same Param and adds its gradient into it. Vocabulary-parallel under tp: this rank holds rows
// [vocab_start, vocab_start + V_r) (V_r = shard_extent(V, tp.vocab()).length: ceil(V/tp), less
// on the last ranks when tp does not divide V) and gives zero rows for other ids, so the forward
// is a partial sum that the caller's tp region reduces.
#pragma once

#include <cstdint>
#include <vector>

#include "models/param.h"
#include "models/sharding.h"

namespace weft::models {

class Embedding {
 public:
  Embedding(int64_t vocab, int64_t hidden, const TpShard& shard);

  // ids [N] (i32/i64) -> [N, D] (partial under tp).
  [[nodiscard]] Tensor forward(const Tensor& ids) const;
  // Adds dy [N, D] (whole) into the local rows of the table that `ids` selected.
  void backward(const Tensor& ids, const Tensor& dy);

  void collect_params(std::vector<Param*>& out) { out.push_back(&table_); }
  [[nodiscard]] Param& table() { return table_; }

 private:
  Param table_;  // [V_r, D]
};

}  // namespace weft::models
