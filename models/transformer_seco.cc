// SeCO and SpaCO (docs/algorithms.md "SeCO and SpaCO"): the model's forward and backward chunk
// by chunk of positions. The forward runs every chunk through embedding, layers, head and loss
// in order, keeping nothing but each layer's stream (the keys and values of the positions so
// far, or the linear-attention states). The backward runs the chunks from the last to the first:
// the chunk's forward again, now keeping its activations, then its backward from its own loss;
// the gradients it leaves on earlier chunks' keys and values (or states) wait in the streams
// until those chunks run. SpaCO back-propagates each chunk with probability keep/k and scales
// its loss and what it receives from later chunks by k/keep (at most 2).
#include <algorithm>
#include <random>

#include "models/moe_block.h"
#include "models/next_token_loss.h"
#include "models/param_init.h"
#include "models/position_rows.h"
#include "models/transformer_saved.h"

namespace weft::models {

void Transformer::seco_forward(const Tensor& tokens, ChunkSaved& s, Tensor* logits,
                               double* loss_sum) {
  const Chunk& chunk = chunks_[0];
  const int64_t b = tokens.dim(0), t = tokens.dim(1), step = layout_.seco;
  s.batch = TokenBatch::make(b, t, 0);
  s.ids = tokens.view({b * t});
  s.targets = next_token_targets(tokens);  // [B*T]
  s.streams.clear();
  for (const auto& block : chunk.blocks) s.streams.push_back(block->stream_begin(s.batch, step));
  *loss_sum = 0;
  Tensor all_logits;  // [N, V_r], only when the caller wants the logits
  for (int64_t a = 0; a < t; a += step) {
    const int64_t e = std::min(t, a + step);
    const TokenBatch rows = TokenBatch::make(b, e - a, a);
    Tensor x = region_.leave(embedding_->forward(position_rows(s.ids, b, t, a, e)));
    for (size_t i = 0; i < chunk.blocks.size(); ++i) {
      const DecoderBlock::StreamChunk part{s.streams[i].get(), a, e};
      x = chunk.blocks[i]->forward(rows, x, region_, nullptr, nullptr, &part);
    }
    const Tensor part_logits = head_->forward(region_.enter(final_norm_->forward(x, nullptr)));
    Tensor lse = Tensor::empty({rows.tokens()});
    *loss_sum += cross_entropy_sum(part_logits, position_rows(s.targets, b, t, a, e),
                                   head_->vocab_start(), layout_.tp.group, lse);
    if (logits != nullptr) {
      if (!all_logits.defined()) all_logits = Tensor::empty({b * t, part_logits.dim(1)});
      for (int64_t q = 0; q < b; ++q) {
        all_logits.slice(q * t + a, q * t + e)
            .copy_from(part_logits.slice(q * (e - a), (q + 1) * (e - a)));
      }
    }
  }
  if (logits != nullptr) *logits = all_logits.view({b, t, all_logits.dim(1)});
}

void Transformer::seco_backward(ChunkSaved& s, float loss_scale) {
  Chunk& chunk = chunks_[0];
  ensure_grad(head_->weight());
  const int64_t b = s.batch.batch, t = s.batch.len, step = layout_.seco;
  const int64_t count = (t + step - 1) / step;
  // SpaCO: which chunks run their backward, and the factor on what they receive.
  std::vector<bool> runs(count, true);
  float factor = 1.0f;
  if (layout_.spaco_keep > 0 && layout_.spaco_keep < count) {
    const double p = static_cast<double>(layout_.spaco_keep) / static_cast<double>(count);
    factor = static_cast<float>(std::min(1.0 / p, 2.0));
    // Every rank draws the same chunks: the tp, ep and dp collectives of a chunk must match.
    std::mt19937_64 rng(layout_.spaco_seed * 0x9E3779B97F4A7C15ULL + spaco_draws_++);
    std::bernoulli_distribution draw(p);
    for (int64_t i = 0; i < count; ++i) runs[i] = draw(rng);
  }
  for (auto& stream : s.streams) stream->handover_scale = factor;
  for (int64_t i = count - 1; i >= 0; --i) {
    const int64_t a = i * step, e = std::min(t, a + step);
    if (!runs[i]) {
      for (size_t l = 0; l < chunk.blocks.size(); ++l) {
        chunk.blocks[l]->stream_skip(*s.streams[l], a, e);
      }
      continue;
    }
    // The chunk's forward again, keeping its activations.
    const TokenBatch rows = TokenBatch::make(b, e - a, a);
    const Tensor ids = position_rows(s.ids, b, t, a, e);
    std::vector<DecoderBlock::Saved> saved(chunk.blocks.size());
    Tensor x = region_.leave(embedding_->forward(ids));
    for (size_t l = 0; l < chunk.blocks.size(); ++l) {
      const DecoderBlock::StreamChunk part{s.streams[l].get(), a, e};
      chunk.blocks[l]->set_recomputing(true);
      x = chunk.blocks[l]->forward(rows, x, region_, nullptr, &saved[l], &part);
      chunk.blocks[l]->set_recomputing(false);
    }
    RmsNorm::Saved norm;
    const Tensor normed = region_.enter(final_norm_->forward(x, &norm));
    Tensor part_logits = head_->forward(normed);  // overwritten by its gradient
    const Tensor targets = position_rows(s.targets, b, t, a, e);
    Tensor lse = Tensor::empty({rows.tokens()});
    (void)cross_entropy_sum(part_logits, targets, head_->vocab_start(), layout_.tp.group, lse);
    // Its backward from its own loss, and from what later chunks left on its keys and values.
    cross_entropy_grad(part_logits, targets, head_->vocab_start(), lse, loss_scale * factor,
                       part_logits);
    Tensor dx =
        final_norm_->backward(norm, region_.enter_backward(head_->backward(normed, part_logits)));
    for (size_t l = chunk.blocks.size(); l-- > 0;) {
      dx = chunk.blocks[l]->backward(saved[l], dx, region_, s.streams[l].get());
    }
    embedding_->backward(ids, region_.leave_backward(dx));
  }
  s.streams.clear();
}

}  // namespace weft::models
