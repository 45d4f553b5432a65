// CausalLM: the whole model family of DESIGN.md (Llama/Qwen2 dense, Mixtral MoE, linear
// attention and hybrids via layer_types) with explicit forward and backward, llm.c style.
//
//   auto model = CausalLM::from_pretrained(dir);          // config.json + safetensors
//   auto out = model->forward(tokens, {.keep_logits = true, .for_backward = true});
//   model->backward(1.0f / out.predicted);                // grads of the mean loss
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/param.h"
#include "runtime/core/tensor.h"
#include "runtime/io/model_config.h"

namespace weft::models {

struct ForwardOptions {
  bool keep_logits = false;   // return the [B, T, V] logits
  bool for_backward = false;  // keep what backward() needs
};

struct ForwardResult {
  Tensor logits;           // [B, T, V] f32 when keep_logits, else undefined
  double loss_sum = 0;     // sum of next-token cross-entropy over predicted positions
  int64_t predicted = 0;   // number of predicted positions: B * (T - 1)
};

// Per-request decoding state: the KV cache of softmax-attention layers and the carried state
// S of linear-attention layers, for `batch` sequences of up to `max_len` tokens.
class InferenceState {
 public:
  virtual ~InferenceState() = default;
  [[nodiscard]] virtual int64_t length() const = 0;  // tokens already consumed
};

class CausalLM {
 public:
  virtual ~CausalLM() = default;

  // Loads config.json and the weights (single or sharded safetensors; bf16/f16/f32 converted
  // to f32). Errors name the problem: missing tensor, shape that disagrees with config.json.
  static absl::StatusOr<std::unique_ptr<CausalLM>> from_pretrained(const std::string& model_dir);
  // Random initialisation (normal, std 0.02; norm weights 1), reproducible from `seed`.
  static absl::StatusOr<std::unique_ptr<CausalLM>> from_config(const io::ModelConfig& config,
                                                               uint64_t seed);

  [[nodiscard]] virtual const io::ModelConfig& config() const = 0;
  // Every parameter once, in a fixed order (embedding, layers in order, final norm, head).
  [[nodiscard]] virtual const std::vector<Param*>& parameters() = 0;

  // Ids in [0, vocab_size): an error naming the first bad id and its position otherwise.
  [[nodiscard]] virtual absl::Status check_tokens(const Tensor& tokens) const = 0;

  // tokens [B, T] (i64). Position t predicts tokens[:, t+1]; the last position predicts nothing.
  virtual ForwardResult forward(const Tensor& tokens, const ForwardOptions& options) = 0;
  // Back-propagates loss_sum * loss_scale from the last forward(for_backward = true) and ADDS
  // into every Param::grad.
  virtual void backward(float loss_scale) = 0;
  virtual void zero_grad() = 0;

  // Incremental decoding: consumes tokens [B, t] after the state's current length and returns
  // their logits [B, t, V]. Equals the matching rows of a full forward.
  [[nodiscard]] virtual std::unique_ptr<InferenceState> new_inference_state(int64_t batch,
                                                                            int64_t max_len) = 0;
  virtual Tensor forward_incremental(InferenceState& state, const Tensor& tokens) = 0;
};

}  // namespace weft::models
