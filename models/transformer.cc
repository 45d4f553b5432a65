#include "models/transformer.h"

#include <utility>

#include "kernels/ops.h"
#include "models/next_token_loss.h"
#include "models/param_init.h"
#include "runtime/core/status.h"

namespace weft::models {

class Transformer::DecodingState final : public InferenceState {
 public:
  DecodingState(int64_t batch, int64_t max_len) : batch(batch), max_len(max_len) {}
  [[nodiscard]] int64_t length() const override { return consumed; }

  const int64_t batch;
  const int64_t max_len;
  int64_t consumed = 0;                             // tokens per sequence already in the caches
  std::vector<std::unique_ptr<MixerCache>> layers;  // one per decoder layer
};

Transformer::Transformer(io::ModelConfig config)
    : config_(std::move(config)),
      embedding_(config_.vocab_size, config_.hidden_size),
      final_norm_("model.norm", config_.hidden_size, static_cast<float>(config_.rms_norm_eps)),
      head_(config_.vocab_size, config_.hidden_size,
            config_.tie_word_embeddings ? &embedding_.table() : nullptr) {
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    blocks_.push_back(std::make_unique<DecoderBlock>(config_, i));
  }
  embedding_.collect_params(params_);
  for (auto& block : blocks_) block->collect_params(params_);
  final_norm_.collect_params(params_);
  head_.collect_params(params_);
}

absl::Status Transformer::check_tokens(const Tensor& tokens) const {
  if (tokens.ndim() != 2 || (tokens.dtype() != DType::kI64 && tokens.dtype() != DType::kI32)) {
    return invalid_argument("tokens must be a [batch, length] tensor of i32 or i64 ids, got ",
                            tokens.str());
  }
  const std::vector<int64_t> ids = tokens.to_ints();
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= config_.vocab_size) {
      const int64_t len = tokens.dim(1);
      return invalid_argument("token id ", ids[i], " at [", static_cast<int64_t>(i) / len, ", ",
                              static_cast<int64_t>(i) % len, "] is outside the vocabulary [0, ",
                              config_.vocab_size, ")");
    }
  }
  return absl::OkStatus();
}

Tensor Transformer::hidden_states(const TokenBatch& batch, const Tensor& ids, DecodingState* state,
                                  Saved* saved) const {
  Tensor x = embedding_.forward(ids);  // [N, D]
  for (size_t i = 0; i < blocks_.size(); ++i) {
    x = blocks_[i]->forward(batch, x, state != nullptr ? state->layers[i].get() : nullptr,
                            saved != nullptr ? &saved->blocks[i] : nullptr);
  }
  return final_norm_.forward(x, saved != nullptr ? &saved->final_norm : nullptr);
}

ForwardResult Transformer::forward(const Tensor& tokens, const ForwardOptions& options) {
  const absl::Status valid = check_tokens(tokens);
  WEFT_CHECK(valid.ok()) << valid.message();
  saved_.reset();  // frees the activations of an earlier forward that had no backward
  const int64_t b = tokens.dim(0), t = tokens.dim(1);
  const TokenBatch batch = TokenBatch::make(b, t, 0);
  Saved saved;
  saved.ids = tokens.view({b * t});
  saved.targets = next_token_targets(tokens);
  saved.blocks.resize(blocks_.size());
  Saved* keep = options.for_backward ? &saved : nullptr;

  const Tensor normed = hidden_states(batch, saved.ids, nullptr, keep);  // [N, D]
  Tensor logits = head_.forward(normed);                                 // [N, V]
  Tensor lse = Tensor::empty({b * t});                                   // [N]
  ForwardResult result;
  result.loss_sum = cross_entropy_sum(logits, saved.targets, lse);
  result.predicted = b * (t - 1);
  if (options.keep_logits) result.logits = logits.view({b, t, config_.vocab_size});
  if (options.for_backward) {
    saved.normed = normed;
    saved.logits = std::move(logits);
    saved.lse = std::move(lse);
    saved.logits_returned = options.keep_logits;
    saved_ = std::move(saved);
  }
  return result;
}

void Transformer::backward(float loss_scale) {
  WEFT_CHECK(saved_.has_value()) << "backward() needs a forward(for_backward = true) before it";
  for (Param* p : params_) ensure_grad(*p);
  Saved& s = *saved_;
  // The [N, V] gradient overwrites the logits in place unless the caller holds them.
  Tensor dlogits = s.logits_returned ? Tensor::empty(s.logits.shape()) : s.logits;
  cross_entropy_grad(s.logits, s.targets, s.lse, loss_scale, dlogits);
  s.logits = Tensor();
  Tensor dx = final_norm_.backward(s.final_norm, head_.backward(s.normed, dlogits));
  s.normed = Tensor();
  for (size_t i = blocks_.size(); i-- > 0;) {
    dx = blocks_[i]->backward(s.blocks[i], dx);
    s.blocks[i] = DecoderBlock::Saved();
  }
  embedding_.backward(s.ids, dx);
  saved_.reset();
}

void Transformer::zero_grad() {
  for (Param* p : params_) {
    if (p->grad.defined()) {
      p->grad.zero_();
    } else {
      ensure_grad(*p);
    }
  }
}

std::unique_ptr<InferenceState> Transformer::new_inference_state(int64_t batch, int64_t max_len) {
  auto state = std::make_unique<DecodingState>(batch, max_len);
  for (auto& block : blocks_) state->layers.push_back(block->new_cache(batch, max_len));
  return state;
}

Tensor Transformer::forward_incremental(InferenceState& state_base, const Tensor& tokens) {
  auto& state = static_cast<DecodingState&>(state_base);
  const absl::Status valid = check_tokens(tokens);
  WEFT_CHECK(valid.ok()) << valid.message();
  const int64_t b = tokens.dim(0), t = tokens.dim(1);
  WEFT_CHECK_EQ(b, state.batch) << "tokens' batch differs from the inference state's";
  WEFT_CHECK_LE(state.consumed + t, state.max_len) << "decoding past the state's max_len";
  const TokenBatch batch = TokenBatch::make(b, t, state.consumed);
  const Tensor normed = hidden_states(batch, tokens.view({b * t}), &state, nullptr);
  state.consumed += t;
  return head_.forward(normed).view({b, t, config_.vocab_size});
}

}  // namespace weft::models
