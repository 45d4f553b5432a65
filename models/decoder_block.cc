#include "models/decoder_block.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/ops.h"
#include "models/linear_attention.h"
#include "models/moe_block.h"
#include "models/position_rows.h"
#include "models/softmax_attention.h"
#include "models/swiglu_mlp.h"

namespace weft::models {

namespace {

std::unique_ptr<TokenMixer> make_mixer(const io::ModelConfig& config, int64_t layer,
                                       const TpContext& tp, const SpContext& sp,
                                       bool recompute_attention) {
  if (config.layer_types[layer] == io::LayerType::kLinearAttention) {
    return std::make_unique<LinearAttention>(config, layer, tp, sp.linear);
  }
  return std::make_unique<SoftmaxAttention>(config, layer, tp, sp.attention, recompute_attention);
}

std::unique_ptr<FeedForward> make_ffn(const io::ModelConfig& config, int64_t layer,
                                      const TpContext& tp, const ExpertContext& experts) {
  if (config.is_moe()) return std::make_unique<MoeBlock>(config, layer, tp, experts);
  return SwiGluMlp::dense(layer, config.hidden_size, config.intermediate_size, tp.even());
}

std::string norm_name(int64_t layer, const char* norm) {
  return absl::StrCat("model.layers.", layer, ".", norm);
}

}  // namespace

DecoderBlock::DecoderBlock(const io::ModelConfig& config, int64_t layer, const TpContext& tp,
                           const SpContext& sp, const ExpertContext& experts,
                           bool recompute_attention)
    : input_norm_(norm_name(layer, "input_layernorm"), config.hidden_size,
                  static_cast<float>(config.rms_norm_eps)),
      mixer_(make_mixer(config, layer, tp, sp, recompute_attention)),
      post_attention_norm_(norm_name(layer, "post_attention_layernorm"), config.hidden_size,
                           static_cast<float>(config.rms_norm_eps)),
      ffn_(make_ffn(config, layer, tp, experts)) {}

Tensor DecoderBlock::forward(const TokenBatch& batch, const Tensor& x,
                             const parallel::TensorParallelRegion& region, MixerCache* cache,
                             Saved* saved, const StreamChunk* chunk) const {
  const bool keep = saved != nullptr;
  const Tensor xn = region.enter(input_norm_.forward(x, keep ? &saved->norm1 : nullptr));  // [n, D]
  SavedPtr* mixer_saved = keep ? &saved->mixer : nullptr;
  Tensor h = region.leave(
      chunk != nullptr ? mixer_->stream_forward(*chunk->stream, chunk->a, chunk->e, xn, mixer_saved)
                       : mixer_->forward(batch, xn, cache, mixer_saved));
  kernels::add_(h, x);  // h = x + mixer(.)
  const Tensor hn = post_attention_norm_.forward(h, keep ? &saved->norm2 : nullptr);
  Tensor out = ffn_->forward_in_region(batch, hn, region, keep ? &saved->ffn : nullptr);
  kernels::add_(out, h);  // out = h + ffn(.)
  return out;
}

Tensor DecoderBlock::backward(Saved& saved, const Tensor& dy,
                              const parallel::TensorParallelRegion& region, MixerStream* stream) {
  const Tensor dhn = ffn_->backward_in_region(*saved.ffn, dy, region);
  saved.ffn.reset();
  Tensor dh = post_attention_norm_.backward(saved.norm2, dhn);
  kernels::add_(dh, dy);  // residual
  const Tensor dmix = region.leave_backward(dh);
  const Tensor dxn =
      region.enter_backward(stream != nullptr ? mixer_->stream_backward(*stream, *saved.mixer, dmix)
                                              : mixer_->backward(*saved.mixer, dmix));
  saved.mixer.reset();
  Tensor dx = input_norm_.backward(saved.norm1, dxn);
  kernels::add_(dx, dh);  // residual
  return dx;
}

Tensor DecoderBlock::ffn_partial_backward(Saved& saved, const Tensor& dy) {
  Tensor dhn = ffn_->backward(*saved.ffn, dy);
  saved.ffn.reset();
  return dhn;
}

Tensor DecoderBlock::norm2_backward(Saved& saved, const Tensor& dhn) {
  Tensor dh = post_attention_norm_.backward(saved.norm2, dhn);
  saved.norm2 = RmsNorm::Saved();
  return dh;
}

Tensor DecoderBlock::mixer_partial_backward(Saved& saved, const Tensor& dmix) {
  Tensor dxn = mixer_->backward(*saved.mixer, dmix);
  saved.mixer.reset();
  return dxn;
}

Tensor DecoderBlock::norm1_backward(Saved& saved, const Tensor& dxn) {
  Tensor dx = input_norm_.backward(saved.norm1, dxn);
  saved.norm1 = RmsNorm::Saved();
  return dx;
}

Tensor DecoderBlock::backward_streamed(const TokenBatch& batch, const Tensor& x, const Tensor& dy,
                                       const parallel::TensorParallelRegion& region, int64_t chunk,
                                       const std::vector<float>* moe_balance) {
  if (region.sequence_parallel())
    return backward_streamed_sp(batch, x, dy, region, chunk, moe_balance);
  WEFT_CHECK(batch.offset == 0 && batch.paged == nullptr && chunk > 0 && x.dim(0) == batch.tokens())
      << "StreamBP's layer backward takes whole sequences";
  const int64_t b = batch.batch, t = batch.len;
  MoeBlock* moe_block = moe();
  if (moe_block != nullptr) moe_block->set_fixed_balance(moe_balance);
  std::unique_ptr<MixerStream> stream = mixer_->stream_begin(batch, chunk);
  mixer_->stream_prefill(*stream, region.enter(input_norm_.forward(x, nullptr)));
  Tensor dx = Tensor::empty(x.shape(), DType::kF32, x.device());  // [N, D]
  for (int64_t a = (t - 1) / chunk * chunk; a >= 0; a -= chunk) {
    const int64_t e = std::min(t, a + chunk);
    const StreamChunk rows{stream.get(), a, e};
    Saved saved;
    (void)forward(TokenBatch::make(b, e - a, a), position_rows(x, b, t, a, e), region, nullptr,
                  &saved, &rows);
    const Tensor dx_rows = backward(saved, position_rows(dy, b, t, a, e), region, stream.get());
    for (int64_t s = 0; s < b; ++s) {
      dx.slice(s * t + a, s * t + e).copy_from(dx_rows.slice(s * (e - a), (s + 1) * (e - a)));
    }
  }
  if (moe_block != nullptr) moe_block->set_fixed_balance(nullptr);
  return dx;
}

Tensor DecoderBlock::backward_streamed_sp(const TokenBatch& batch, const Tensor& x,
                                          const Tensor& dy,
                                          const parallel::TensorParallelRegion& region,
                                          int64_t chunk, const std::vector<float>* moe_balance) {
  // Every tp rank runs the chunks over all rows, as plain tensor parallelism does.
  RmsNorm* norms[] = {&input_norm_, &post_attention_norm_};
  std::vector<Tensor> before;
  for (RmsNorm* norm : norms) before.push_back(norm->weight().grad.clone());
  const Tensor dx = backward_streamed(batch, region.enter(x), region.enter(dy),
                                      region.without_sequence_parallel(), chunk, moe_balance);
  // The norms' weight gradients are then whole on every rank, while the model sums them over tp
  // as partials (each rank's own rows, Transformer::finish_grads): keep 1/tp of what was added.
  for (size_t i = 0; i < before.size(); ++i) {
    Tensor& grad = norms[i]->weight().grad;
    kernels::add_(grad, before[i], -1.0f);
    kernels::scale_(grad, 1.0f / static_cast<float>(region.size()));
    kernels::add_(grad, before[i]);
  }
  return region.own_rows(dx);
}

MoeBlock* DecoderBlock::moe() const { return dynamic_cast<MoeBlock*>(ffn_.get()); }

void DecoderBlock::set_recomputing(bool recomputing) {
  if (MoeBlock* m = moe()) m->set_recomputing(recomputing);
}

void DecoderBlock::collect_params(std::vector<Param*>& out) {
  // Hugging Face's named_parameters() order.
  mixer_->collect_params(out);
  ffn_->collect_params(out);
  input_norm_.collect_params(out);
  post_attention_norm_.collect_params(out);
}

}  // namespace weft::models
