// Shift parallelism's sequence-parallel serving step (docs/serving.md "Shift parallelism") on the
// model that holds all the weights: this rank's share of the step's rows through the embedding,
// every layer (attention Ulysses-style into the tensor-parallel model's KV cache) and the head
// of its sampling rows; the logits then go to group rank 0.
#include "models/transformer.h"
#include "models/transformer_saved.h"

namespace weft::models {

Tensor Transformer::forward_paged_ulysses(PagedKvCache& cache_base, const PagedBatch& paged,
                                          comm::Communicator& group) {
  WEFT_CHECK(layout_.tp.size == 1 && layout_.pp == 1 && chunks_.size() == 1)
      << "the sequence-parallel step runs on a model holding every weight";
  auto& cache = static_cast<PagedState&>(cache_base);
  const int p = group.size(), rank = group.rank();
  const int64_t n = paged.size();
  WEFT_CHECK_LE(p, n) << "a sequence-parallel step needs a row per rank";
  UlyssesSplit split{&group, std::vector<int64_t>(p + 1)};
  for (int i = 0; i <= p; ++i) split.begin[i] = n * i / p;
  PagedBatch mine = paged;
  mine.ulysses = &split;
  const int64_t b = split.begin[rank], e = split.begin[rank + 1];
  TokenBatch batch{1, e - b, 0, paged.positions.slice(b, e)};
  batch.paged = &mine;
  batch.seq_lens = request_lengths(paged).slice(b, e);
  Tensor x = embedding_->forward(paged.tokens.slice(b, e));  // [e - b, D]
  const std::vector<std::unique_ptr<DecoderBlock>>& blocks = chunks_[0].blocks;
  for (size_t i = 0; i < blocks.size(); ++i) {
    x = blocks[i]->forward(batch, x, region_, cache.layers[i].get(), nullptr);
  }
  // The logits of this rank's sampling rows; sample_rows ascend, so rank order is their order.
  std::vector<int64_t> own, per_rank(p, 0);
  for (int64_t row : paged.sample_rows) {
    int owner = 0;
    while (row >= split.begin[owner + 1]) ++owner;
    ++per_rank[owner];
    if (owner == rank) own.push_back(row - b);
  }
  const int64_t d = config_.hidden_size, v = config_.vocab_size;
  Tensor logits = Tensor::empty({static_cast<int64_t>(own.size()), v});
  if (!own.empty()) {
    Tensor rows = Tensor::empty({static_cast<int64_t>(own.size()), d});
    for (size_t i = 0; i < own.size(); ++i) {
      rows.slice(i, i + 1).copy_from(x.slice(own[i], own[i] + 1));
    }
    logits = head_->forward(final_norm_->forward(rows, nullptr));
  }
  if (rank != 0) {
    if (!own.empty()) group.send(logits, 0);
    return {};
  }
  Tensor all = Tensor::empty({static_cast<int64_t>(paged.sample_rows.size()), v});
  int64_t at = 0;
  for (int i = 0; i < p; ++i) {
    if (per_rank[i] == 0) continue;
    Tensor part = all.slice(at, at + per_rank[i]);
    if (i == 0) {
      part.copy_from(logits);
    } else {
      group.recv(part, i);
    }
    at += per_rank[i];
  }
  return all;
}

std::vector<std::pair<Tensor, Tensor>> Transformer::paged_kv(PagedKvCache& cache) {
  std::vector<std::pair<Tensor, Tensor>> out;
  for (const auto& layer : static_cast<PagedState&>(cache).layers) out.push_back(layer->paged_kv());
  return out;
}

}  // namespace weft::models
