// A model's shape, from a Hugging Face config.json (Llama, Qwen2, Mixtral; optional
// `layer_types` for linear-attention hybrids).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace weft::io {

enum class LayerType { kFullAttention, kLinearAttention };

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
// num_hidden_layers, top-k <= experts, a supported architecture). Errors name the field.
absl::StatusOr<ModelConfig> parse_model_config(const std::string& json_text);
// Reads DIR/config.json.
absl::StatusOr<ModelConfig> load_model_config(const std::string& model_dir);
// config.json text for `config` (the HF keys above), for export.
std::string model_config_to_json(const ModelConfig& config);

}  // namespace weft::io
