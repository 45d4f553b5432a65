#include "models/weight_shapes.h"

#include <tuple>

#include "absl/strings/str_cat.h"
#include "runtime/core/status.h"

namespace weft::models {

std::vector<WeightShape> hf_weight_shapes(const io::ModelConfig& c) {
  const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim,
                kv = c.num_key_value_heads * c.head_dim, inter = c.intermediate_size;
  using enum TpSplit;
  std::vector<WeightShape> out = {{"model.embed_tokens.weight", {c.vocab_size, h}, kVocab, 0}};
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    const std::string prefix = absl::StrCat("model.layers.", layer, ".");
    out.push_back({prefix + "input_layernorm.weight", {h}});
    for (const auto& [proj, rows, split] :
         {std::tuple{"q_proj", q, kEven}, {"k_proj", kv, kKvHeads}, {"v_proj", kv, kKvHeads}}) {
      out.push_back({absl::StrCat(prefix, "self_attn.", proj, ".weight"), {rows, h}, split, 0});
      if (c.attention_bias)
        out.push_back({absl::StrCat(prefix, "self_attn.", proj, ".bias"), {rows}, split, 0});
    }
    out.push_back({prefix + "self_attn.o_proj.weight", {h, q}, kEven, 1});
    out.push_back({prefix + "post_attention_layernorm.weight", {h}});
    if (c.is_moe()) {
      out.push_back({prefix + "block_sparse_moe.gate.weight", {c.num_local_experts, h}});
      for (int64_t e = 0; e < c.num_local_experts; ++e) {
        const std::string expert = absl::StrCat(prefix, "block_sparse_moe.experts.", e, ".");
        out.push_back({expert + "w1.weight", {inter, h}, kExpert, 0});
        out.push_back({expert + "w3.weight", {inter, h}, kExpert, 0});
        out.push_back({expert + "w2.weight", {h, inter}, kExpert, 1});
      }
    } else {
      out.push_back({prefix + "mlp.gate_proj.weight", {inter, h}, kEven, 0});
      out.push_back({prefix + "mlp.up_proj.weight", {inter, h}, kEven, 0});
      out.push_back({prefix + "mlp.down_proj.weight", {h, inter}, kEven, 1});
    }
  }
  out.push_back({"model.norm.weight", {h}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, h}, kVocab, 0});
  return out;
}

absl::Status check_weights_match_config(const io::ModelConfig& config,
                                        const io::WeightSource& weights) {
  for (const WeightShape& w : hf_weight_shapes(config)) {
    if (!weights.contains(w.name)) {
      return absl::NotFoundError(absl::StrCat("tensor ", w.name, " is missing from the weights in ",
                                              weights.dir(), " (config.json needs it)"));
    }
    WEFT_ASSIGN_OR_RETURN(const io::TensorInfo info, weights.info(w.name));
    if (info.shape != w.shape) {
      return invalid_argument("tensor ", w.name, " has shape ", shape_str(info.shape), " in ",
                              weights.dir(), " but config.json implies ", shape_str(w.shape));
    }
    if (!is_floating(info.dtype)) {
      return invalid_argument("tensor ", w.name, " in ", weights.dir(), " is ",
                              std::string(dtype_name(info.dtype)), ", expected F32, BF16 or F16");
    }
  }
  return absl::OkStatus();
}

}  // namespace weft::models
