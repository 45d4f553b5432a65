// The CausalLM of DESIGN.md on one rank: embedding -> decoder blocks -> final norm -> LM head ->
// next-token cross-entropy, with explicit forward and backward.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "models/causal_lm.h"
#include "models/decoder_block.h"
#include "models/embedding.h"
#include "models/lm_head.h"
#include "models/rmsnorm.h"

namespace weft::models {

class Transformer final : public CausalLM {
 public:
  // `config` must be valid (io::parse_model_config checked it). Parameter values are
  // uninitialised: the factories load or initialise them.
  explicit Transformer(io::ModelConfig config);

  [[nodiscard]] const io::ModelConfig& config() const override { return config_; }
  [[nodiscard]] const std::vector<Param*>& parameters() override { return params_; }
  [[nodiscard]] absl::Status check_tokens(const Tensor& tokens) const override;

  ForwardResult forward(const Tensor& tokens, const ForwardOptions& options) override;
  void backward(float loss_scale) override;
  void zero_grad() override;

  [[nodiscard]] std::unique_ptr<InferenceState> new_inference_state(int64_t batch,
                                                                    int64_t max_len) override;
  Tensor forward_incremental(InferenceState& state, const Tensor& tokens) override;

 private:
  class DecodingState;
  // What forward(for_backward) keeps for backward().
  struct Saved {
    Tensor ids;      // [N]
    Tensor targets;  // [N] i64, -1 where nothing is predicted
    std::vector<DecoderBlock::Saved> blocks;
    RmsNorm::Saved final_norm;
    Tensor normed;                 // [N, D] input of the LM head
    Tensor logits;                 // [N, V]
    Tensor lse;                    // [N]
    bool logits_returned = false;  // returned to the caller: backward must not overwrite them
  };

  // ids [N] -> final-normed hidden states [N, D]. state: the decoding caches, or null.
  [[nodiscard]] Tensor hidden_states(const TokenBatch& batch, const Tensor& ids,
                                     DecodingState* state, Saved* saved) const;

  io::ModelConfig config_;
  Embedding embedding_;
  std::vector<std::unique_ptr<DecoderBlock>> blocks_;
  RmsNorm final_norm_;
  LmHead head_;
  std::vector<Param*> params_;
  std::optional<Saved> saved_;
};

}  // namespace weft::models
