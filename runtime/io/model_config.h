// A model's shape, from a Hugging Face config.json (Llama, Qwen2, Mixtral; optional
// `layer_types` for linear-attention hybrids).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace weft::io {

enum class LayerType { kFullAttention, kLinearAttention };

// config.json's `rope_scaling` (or transformers 5's `rope_parameters`), as transformers'
// modeling_rope_utils.py reads it; the frequencies follow in models/rotary_embedding.h and
// docs/algorithms.md "RoPE scaling".
enum class RopeType { kDefault, kLinear, kDynamic, kYarn, kLlama3 };

struct RopeScaling {
  RopeType type = RopeType::kDefault;
  double factor = 1.0;  // linear, dynamic, yarn, llama3
  // llama3 (required) and yarn (defaults to max_position_embeddings): the pretraining length.
  int64_t original_max_position_embeddings = 0;
  double low_freq_factor = 0.0;  // llama3
  double high_freq_factor = 0.0;
  // yarn: multiplies cos and sin. Given, or 0.1 * mscale * ln(factor) + 1 (mscale 1, or the
  // ratio of that for `mscale` over that for `mscale_all_dim` when both are given).
  double attention_factor = 1.0;
  double beta_fast = 32.0;  // yarn: the correction range's rotation counts
  double beta_slow = 1.0;
  bool truncate = true;  // yarn: floor/ceil the correction range

  bool operator==(const RopeScaling&) const = default;
};

// "default", "linear", "dynamic", "yarn", "llama3".
const char* rope_type_name(RopeType type);

struct ModelConfig {
  std::string architecture;  // "LlamaForCausalLM", "Qwen2ForCausalLM", "MixtralForCausalLM"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2 always has them)
  // MoE (Mixtral): num_local_experts > 0 makes every layer's MLP a sparse MoE block.
  int64_t num_local_experts = 0;
  int64_t num_experts_per_tok = 0;
  double router_aux_loss_coef = 0.0;  // reported apart from the loss; weft applies 0 by default
  // One entry per layer; all kFullAttention when config.json has no `layer_types`.
  std::vector<LayerType> layer_types;
  std::string json;  // the config.json text it came from (kept for checkpoints and export)

  [[nodiscard]] bool is_moe() const { return num_local_experts > 0; }
  [[nodiscard]] bool has_linear_attention() const;
};

// Parses and validates (positive sizes, heads divisible by kv heads, layer_types length equal to
// num_hidden_layers, top-k <= experts, a supported architecture, a known rope_scaling type with
// its required fields). Errors name the field.
absl::StatusOr<ModelConfig> parse_model_config(const std::string& json_text);
// Reads DIR/config.json.
absl::StatusOr<ModelConfig> load_model_config(const std::string& model_dir);
// config.json text for `config` (the HF keys above), for export. rope_scaling / rope_parameters
// stay as the source text has them when they describe config.rope_theta and config.rope_scaling,
// else they are written from `config`.
std::string model_config_to_json(const ModelConfig& config);

}  // namespace weft::io
