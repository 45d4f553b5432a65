#include "models/embedding.h"

#include "kernels/ops.h"
#include "models/param_init.h"

namespace weft::models {

Embedding::Embedding(int64_t vocab, int64_t hidden, const TpShard& shard)
    : table_(new_sharded_param("model.embed_tokens.weight", {vocab, hidden}, 0, shard)) {}

Tensor Embedding::forward(const Tensor& ids) const {
  Tensor out = Tensor::empty({ids.numel(), table_.value.dim(1)});  // [N, D]
  kernels::embedding_forward(ids.on(out.device()), table_.value, table_.spec.offset, out);
  return out;
}

void Embedding::backward(const Tensor& ids, const Tensor& dy) {
  kernels::embedding_backward(ids.on(dy.device()), dy, table_.spec.offset, table_.grad);
}

}  // namespace weft::models
