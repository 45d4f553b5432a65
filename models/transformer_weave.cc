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
#include <algorithm>
#include <cstdlib>

#include "kernels/ops.h"
#include "models/transformer.h"
#include "models/transformer_saved.h"
#include "parallel/shard_gather.h"

namespace weft::models {

namespace {

// Rows [b, e) of a step, padded to `rows` with copies of the last.
struct Half {
  int64_t b = 0, e = 0, rows = 0;
  PagedBatch paged;
  TokenBatch batch;
  Tensor x;           // [rows / tp, D] this rank's share of the residual stream
  Tensor h;           // the same after the attention's residual
  Tensor full, part;  // [rows, D] gathered input / partial output of a matmul stage
  comm::WorkPtr work;
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
  const int p = tp.size(), rank = tp.rank();
  const int64_t n = paged.size(), d = config_.hidden_size;
  // A bench-only switch: the same compute with every collective replaced by a local copy (wrong
  // results), the floor that overlap approaches.
  static const bool drop_comm = std::getenv("WEFT_BENCH_DROP_COMM") != nullptr;
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
  // Collectives, asynchronous on the communicator's thread.
  auto gather = [&](Half& h, const Tensor& local) {
    h.full = Tensor::empty({h.rows, d});
    if (drop_comm) {
      for (int r = 0; r < p; ++r)
        h.full.slice(r * (h.rows / p), (r + 1) * (h.rows / p)).copy_from(local);
      return;
    }
    h.work = tp.all_gather_async(local, h.full);
  };
  auto scatter = [&](Half& h, Tensor& out) {
    out = Tensor::empty({h.rows / p, d});
    if (drop_comm) {
      out.copy_from(h.part.slice(rank * (h.rows / p), (rank + 1) * (h.rows / p)));
      return;
    }
    h.work = tp.reduce_scatter_async(h.part, out, comm::ReduceOp::kSum);
  };
  auto wait = [](Half& h) {
    if (h.work) h.work->wait();
    h.work.reset();
  };
  // Embedding: vocabulary-parallel partial rows, reduce-scattered.
  for (Half& h : halves) {
    h.part = embedding_->forward(h.paged.tokens);
    scatter(h, h.x);
  }
  for (Half& h : halves) wait(h);
  const std::vector<std::unique_ptr<DecoderBlock>>& blocks = chunks_[0].blocks;
  for (size_t l = 0; l < blocks.size(); ++l) {
    const DecoderBlock& block = *blocks[l];
    MixerCache* layer_cache = cache.layers[l].get();
    for (Half& h : halves) gather(h, block.norm1(h.x));
    Tensor attn[2];
    for (int i = 0; i < count; ++i) {  // half i's attention overlaps half i+1's all-gather
      Half& h = halves[i];
      wait(h);
      h.part = block.mixer_partial(h.batch, h.full, layer_cache);
      scatter(h, attn[i]);
    }
    for (int i = 0; i < count; ++i) {
      Half& h = halves[i];
      wait(h);
      h.h = attn[i];
      kernels::add_(h.h, h.x);  // residual, on this rank's rows
      gather(h, block.norm2(h.h));
    }
    Tensor mlp[2];
    for (int i = 0; i < count; ++i) {  // half i's MLP overlaps the other's collective
      Half& h = halves[i];
      wait(h);
      h.part = block.ffn_partial(h.full);
      scatter(h, mlp[i]);
    }
    for (int i = 0; i < count; ++i) {
      Half& h = halves[i];
      wait(h);
      h.x = mlp[i];
      kernels::add_(h.x, h.h);
    }
  }
  // The sampling rows: gather each half's rows, then the final norm and head as forward_paged.
  for (Half& h : halves) gather(h, h.x);
  for (Half& h : halves) wait(h);
  const int64_t s = static_cast<int64_t>(paged.sample_rows.size());
  if (s == 0) return Tensor::empty({0, config_.vocab_size});
  Tensor rows = Tensor::empty({s, d});
  for (int64_t i = 0; i < s; ++i) {
    const int64_t r = paged.sample_rows[i];
    const Half& h = r < halves[0].e ? halves[0] : halves[1];
    rows.slice(i, i + 1).copy_from(h.full.slice(r - h.b, r - h.b + 1));
  }
  const Tensor logits = head_->forward(final_norm_->forward(rows, nullptr));  // [S, V_r]
  return parallel::gather_shards(tp, logits, 1, head_->vocab_start(), {s, config_.vocab_size});
}

}  // namespace weft::models
