// TokenWeave in training (docs/algorithms.md "TokenWeave in training"; Gond et al., 2025), with
// `weft train --tp N --token-weave`. The residual stream has Megatron-SP's layout (each tp rank
// holds a block of the rows between the tp regions: reduce-scatter, residual add and norm on those
// rows, all-gather), and each micro-batch's sequences run as two halves through the whole model,
// one stage behind the other (parallel/token_weave.h), so one half's collective overlaps the
// other half's norm, attention or MLP, in the forward and in the backward. The halves hold whole
// sequences, so their attention is independent; the LM head and the loss run once over every row.
// A half's collectives carry half the rows: the same bytes as Megatron-SP in twice the calls.
#include "kernels/ops.h"
#include "models/transformer.h"
#include "models/transformer_saved.h"
#include "parallel/token_weave.h"

namespace weft::models {

using parallel::WeaveCollective;

bool Transformer::weaves_training() const {
  return layout_.token_weave && region_.sequence_parallel();
}

void Transformer::weave_forward(const Tensor& tokens, ChunkSaved& s, bool keep, Tensor* logits,
                                double* loss_sum) {
  WEFT_CHECK(single_chunk() && layout_.sp == 1) << "--token-weave trains over tp alone";
  const int64_t b = tokens.dim(0), t = tokens.dim(1), d = config_.hidden_size;
  const int count = b >= 2 ? 2 : 1;
  const std::vector<std::unique_ptr<DecoderBlock>>& blocks = chunks_[0].blocks;
  s.batch = TokenBatch::make(b, t, 0);
  s.ids = tokens.view({b * t});
  std::vector<ChunkSaved> halves(count);  // half i: sequences [b i / count, b (i+1) / count)
  for (int i = 0; i < count; ++i) {
    const int64_t first = b * i / count, last = b * (i + 1) / count;
    halves[i].batch = TokenBatch::make(last - first, t, 0);
    halves[i].batch.seq_len = t;
    halves[i].ids = tokens.slice(first, last).view({(last - first) * t});  // [n_i]
    if (keep) halves[i].blocks.resize(blocks.size());
  }
  auto saved = [&](int i, size_t l) { return keep ? &halves[i].blocks[l] : nullptr; };
  // This rank's rows of each half's residual stream, [n_i / tp, D]: a layer's input and the same
  // after the attention's residual.
  std::vector<Tensor> x(count), h(count);
  parallel::TokenWeave weave(*layout_.tp.group, count);
  // Embedding: vocabulary-parallel partial rows [n_i, D], reduce-scattered.
  weave.stage(WeaveCollective::kReduceScatter,
              [&](int i, const Tensor&) { return embedding_->forward(halves[i].ids); });
  for (size_t l = 0; l < blocks.size(); ++l) {
    const DecoderBlock& block = *blocks[l];
    weave.stage(WeaveCollective::kAllGather, [&](int i, const Tensor& in) {
      x[i] = in;
      if (l > 0) kernels::add_(x[i], h[i]);  // the previous layer's MLP residual
      return block.norm1(x[i], saved(i, l));
    });
    weave.stage(WeaveCollective::kReduceScatter, [&](int i, const Tensor& xn) {
      return block.mixer_partial(halves[i].batch, xn, nullptr, saved(i, l));
    });
    weave.stage(WeaveCollective::kAllGather, [&](int i, const Tensor& attn) {
      h[i] = attn;
      kernels::add_(h[i], x[i]);
      return block.norm2(h[i], saved(i, l));
    });
    weave.stage(WeaveCollective::kReduceScatter,
                [&](int i, const Tensor& hn) { return block.ffn_partial(hn, saved(i, l)); });
  }
  weave.stage(WeaveCollective::kAllGather, [&](int i, const Tensor& in) {
    x[i] = in;
    if (!blocks.empty()) kernels::add_(x[i], h[i]);
    return final_norm_->forward(x[i], keep ? &halves[i].final_norm : nullptr);
  });
  Tensor normed = Tensor::empty({b * t, d});  // [N, D], the halves' rows in order
  int64_t row = 0;
  for (int i = 0; i < count; ++i) {
    const Tensor half = weave.result(i);  // [n_i, D]
    normed.slice(row, row + half.dim(0)).copy_from(half);
    row += half.dim(0);
  }
  if (keep) s.halves = std::move(halves);
  head_forward(tokens, sp_positions(t), std::move(normed), s, keep, logits, loss_sum);
}

void Transformer::weave_backward(ChunkSaved& s, float loss_scale) {
  std::vector<ChunkSaved>& halves = s.halves;
  const int count = static_cast<int>(halves.size());
  const std::vector<std::unique_ptr<DecoderBlock>>& blocks = chunks_[0].blocks;
  const int64_t layers = static_cast<int64_t>(blocks.size());
  const Tensor dnormed = head_backward(s, loss_scale);  // [N, D], partial over tp
  // This rank's rows of each half, [n_i / tp, D]: the gradient of a layer's output and of its
  // attention residual h.
  std::vector<Tensor> dy(count), dh(count);
  // Layer l's output gradient from `in`, the reduce-scattered gradient of the norm after it (the
  // final norm's, or layer l+1's input norm's, plus the residual); l = -1: the embedding's.
  auto output_grad = [&](int i, int64_t l, const Tensor& in) {
    if (l + 1 == layers) return final_norm_->backward(halves[i].final_norm, in);
    Tensor d = blocks[l + 1]->norm1_backward(halves[i].blocks[l + 1], in);
    kernels::add_(d, dh[i]);
    return d;
  };
  parallel::TokenWeave weave(*layout_.tp.group, count);
  weave.stage(WeaveCollective::kReduceScatter, [&](int i, const Tensor&) {
    const int64_t first = i == 0 ? 0 : halves[0].batch.tokens();
    return dnormed.slice(first, first + halves[i].batch.tokens());
  });
  for (int64_t l = layers - 1; l >= 0; --l) {
    DecoderBlock& block = *blocks[l];
    weave.stage(WeaveCollective::kAllGather, [&](int i, const Tensor& in) {
      dy[i] = output_grad(i, l, in);
      return dy[i];
    });
    weave.stage(WeaveCollective::kReduceScatter, [&](int i, const Tensor& dy_rows) {
      return block.ffn_partial_backward(halves[i].blocks[l], dy_rows);
    });
    weave.stage(WeaveCollective::kAllGather, [&](int i, const Tensor& dhn) {
      dh[i] = block.norm2_backward(halves[i].blocks[l], dhn);
      kernels::add_(dh[i], dy[i]);  // residual
      return dh[i];
    });
    weave.stage(WeaveCollective::kReduceScatter, [&](int i, const Tensor& dmix) {
      return block.mixer_partial_backward(halves[i].blocks[l], dmix);
    });
  }
  weave.stage(WeaveCollective::kAllGather,
              [&](int i, const Tensor& in) { return output_grad(i, -1, in); });
  for (int i = 0; i < count; ++i) embedding_->backward(halves[i].ids, weave.result(i));
  halves.clear();
}

}  // namespace weft::models
