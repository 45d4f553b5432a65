#include "tests/support/odd_vocab_model.h"

#include <cmath>

#include "absl/strings/match.h"
#include "models/sharding.h"
#include "models/weight_shapes.h"
#include "runtime/core/check.h"
#include "runtime/io/file_util.h"
#include "runtime/io/safetensors.h"
#include "tests/support/test_util.h"

namespace weft::testing {

io::ModelConfig odd_vocab_config(bool tied) {
  io::ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = kOddVocab;
  c.hidden_size = 48;
  c.intermediate_size = 36;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 12;
  c.num_key_value_heads = 12;
  c.head_dim = 4;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = tied;
  c.layer_types.assign(2, io::LayerType::kFullAttention);
  return c;
}

std::map<std::string, Tensor> odd_vocab_weights(const io::ModelConfig& config, OddVocabWeights kind,
                                                uint64_t seed) {
  const bool adversarial = kind == OddVocabWeights::kPaddingWouldWin;
  WEFT_CHECK(!adversarial || !config.tie_word_embeddings) << "kPaddingWouldWin needs an own head";
  std::map<std::string, Tensor> out;
  for (const models::WeightShape& w : models::hf_weight_shapes(config)) {
    const uint64_t s = seed + out.size();
    Tensor t = w.shape.size() == 1 ? random_tensor(w.shape, s, 0.8f, 1.2f)
                                   : random_tensor(w.shape, s, -0.4f, 0.4f);
    if (adversarial) {
      const bool residual_writer =
          absl::StrContains(w.name, "o_proj") || absl::StrContains(w.name, "down_proj");
      if (residual_writer) t = Tensor::zeros(w.shape);
      if (w.name == "model.embed_tokens.weight") t = random_tensor(w.shape, s, 0.5f, 1.5f);
      if (w.name == "lm_head.weight") {
        // Row v: -1/sqrt(D) + n_v, n_v noise of zero mean: logit = -sum(u)/sqrt(D) + n_v . u for
        // the normed embedding u (all entries positive, mean near 1), so near -sqrt(D) for every
        // id, and which id wins depends on the token through n_v . u.
        const int64_t d = w.shape[1];
        t = random_tensor(w.shape, s, -0.2f, 0.2f);
        float* p = t.data<float>();
        for (int64_t row = 0; row < w.shape[0]; ++row) {
          float mean = 0;
          for (int64_t j = 0; j < d; ++j) mean += p[row * d + j] / static_cast<float>(d);
          for (int64_t j = 0; j < d; ++j) {
            p[row * d + j] -= mean + 1.0f / std::sqrt(static_cast<float>(d));
          }
        }
      }
    }
    out[w.name] = t;
  }
  return out;
}

std::unique_ptr<models::CausalLM> model_with_weights(const io::ModelConfig& config,
                                                     const std::map<std::string, Tensor>& weights,
                                                     const models::ParallelOptions& parallel) {
  auto model = models::CausalLM::from_config(config, /*seed=*/1, parallel);
  WEFT_CHECK(model.ok()) << model.status().message();
  for (models::Param* p : (*model)->parameters()) {
    p->value = models::take_shard(weights.at(p->name), p->spec, p->value.shape());
  }
  return std::move(*model);
}

void write_model_dir(const std::string& dir, const io::ModelConfig& config,
                     const std::map<std::string, Tensor>& weights) {
  io::NamedTensors tensors(weights.begin(), weights.end());
  WEFT_CHECK(io::write_safetensors(dir + "/model.safetensors", tensors).ok());
  WEFT_CHECK(io::write_file_atomic(dir + "/config.json", io::model_config_to_json(config)).ok());
}

}  // namespace weft::testing
