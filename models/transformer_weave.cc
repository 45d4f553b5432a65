// TokenWeave's serving step (docs/serving.md "TokenWeave"; Gond et al., 2025) under tensor
// parallelism. Two changes to forward_paged:
// - The residual stream lives on this rank's rows: each layer's partial outputs are
//   reduce-scattered, the residual add and the next norm run on 1/tp of the rows, and the normed
//   rows are all-gathered for the next matmuls (the bytes of one all-reduce; the norms' work
//   divided by tp).
// - The step's tokens run as two halves, one stage behind the other: the collectives run on the
//   communicator's own thread, so one half's all-gather or reduce-scatter overlaps the other
//   half's attention or MLP. The first half's keys and values are in the cache before the second
//   half attends in the same layer, so a request cut between the halves sees them.
// A half's rows are padded to a multiple of tp with copies of its last token: a copy computes
// the same keys and values as its original, writes them to the same slot, and is dropped.
#include "kernels/ops.h"
#include "models/transformer.h"
#include "models/transformer_saved.h"
#include "parallel/shard_gather.h"
#include "parallel/token_weave.h"

namespace weft::models {

namespace {

// Rows [b, e) of a step, padded to `rows` with copies of the last.
struct Half {
  int64_t b = 0, e = 0, rows = 0;
  PagedBatch paged;
  TokenBatch batch;
  Tensor x;  // [rows / tp, D] this rank's share of the residual stream
  Tensor h;  // the same after the attention's residual
};

// Rows [b, e) of t [N] (i64), then its last row repeated up to `rows`.
Tensor padded(const Tensor& t, int64_t b, int64_t e, int64_t rows) {
  std::vector<int64_t> v = t.slice(b, e).to_ints();
  v.resize(rows, v.back());
  return Tensor::from_ints(v, {rows}).on(t.device());
}

}  // namespace

Tensor Transformer::forward_paged_weave(PagedKvCache& cache_base, const PagedBatch& paged) {
  WEFT_CHECK(layout_.pp == 1 && !layout_.experts.dispatches()) << "TokenWeave serves on tp alone";
  auto& cache = static_cast<PagedState&>(cache_base);
  comm::Communicator& tp = *layout_.tp.group;
  const int p = tp.size();
  const int64_t n = paged.size(), d = config_.hidden_size;
  const int count = n >= 2 ? 2 : 1;
  const Tensor seq_lens = request_lengths(paged);  // of whole requests, across the halves
  std::vector<Half> halves(count);
  for (int i = 0; i < count; ++i) {
    Half& h = halves[i];
    h.b = n * i / count;
    h.e = n * (i + 1) / count;
    h.rows = (h.e - h.b + p - 1) / p * p;
    h.paged.tokens = padded(paged.tokens, h.b, h.e, h.rows);
    h.paged.positions = padded(paged.positions, h.b, h.e, h.rows);
    h.paged.seq = padded(paged.seq, h.b, h.e, h.rows);
    h.paged.slots = padded(paged.slots, h.b, h.e, h.rows);
    h.paged.block_tables = paged.block_tables;
    h.batch = TokenBatch{1, h.rows, 0, h.paged.positions};
    h.batch.paged = &h.paged;
    h.batch.seq_lens = padded(seq_lens, h.b, h.e, h.rows);
  }
  using parallel::WeaveCollective;
  parallel::TokenWeave weave(tp, count);
  // Embedding: vocabulary-parallel partial rows, reduce-scattered.
  weave.stage(WeaveCollective::kReduceScatter,
              [&](int i, const Tensor&) { return embedding_->forward(halves[i].paged.tokens); });
  const std::vector<std::unique_ptr<DecoderBlock>>& blocks = chunks_[0].blocks;
  for (size_t l = 0; l < blocks.size(); ++l) {
    const DecoderBlock& block = *blocks[l];
    MixerCache* layer_cache = cache.layers[l].get();
    weave.stage(WeaveCollective::kAllGather, [&](int i, const Tensor& in) {
      Half& h = halves[i];
      h.x = in;
      if (l > 0) kernels::add_(h.x, h.h);  // the previous layer's MLP residual
      return block.norm1(h.x);
    });
    // Half 0's attention runs first, so half 1's tokens find its keys and values in the cache.
    weave.stage(WeaveCollective::kReduceScatter, [&](int i, const Tensor& xn) {
      return block.mixer_partial(halves[i].batch, xn, layer_cache);
    });
    weave.stage(WeaveCollective::kAllGather, [&](int i, const Tensor& attn) {
      Half& h = halves[i];
      h.h = attn;
      kernels::add_(h.h, h.x);  // residual, on this rank's rows
      return block.norm2(h.h);
    });
    weave.stage(WeaveCollective::kReduceScatter,
                [&](int i, const Tensor& hn) { return block.ffn_partial(hn); });
  }
  // The sampling rows: gather each half's rows, then the final norm and head as forward_paged.
  weave.stage(WeaveCollective::kAllGather, [&](int i, const Tensor& in) {
    Half& h = halves[i];
    h.x = in;
    if (!blocks.empty()) kernels::add_(h.x, h.h);
    return h.x;
  });
  const Tensor full[2] = {weave.result(0), count > 1 ? weave.result(1) : Tensor()};  // [rows, D]
  const int64_t s = static_cast<int64_t>(paged.sample_rows.size());
  if (s == 0) return Tensor::empty({0, config_.vocab_size});
  Tensor rows = Tensor::empty({s, d});
  for (int64_t i = 0; i < s; ++i) {
    const int64_t r = paged.sample_rows[i];
    const int half = r < halves[0].e ? 0 : 1;
    const int64_t at = r - halves[half].b;
    rows.slice(i, i + 1).copy_from(full[half].slice(at, at + 1));
  }
  const Tensor logits = head_->forward(final_norm_->forward(rows, nullptr));  // [S, V_r]
  return parallel::gather_shards(tp, logits, 1, head_->vocab_start(), {s, config_.vocab_size});
}

}  // namespace weft::models
