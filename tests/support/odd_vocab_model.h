// The model of the vocabulary-padding tests: a tiny Llama whose vocabulary, 97 ids (a prime), no
// tp > 1 divides (docs/algorithms.md "Tensor parallelism"), with O(1) random weights so that
// argmax gaps are wide and every gradient is well above f32 rounding.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "models/causal_lm.h"
#include "runtime/core/tensor.h"
#include "runtime/io/model_config.h"

namespace weft::testing {

inline constexpr int64_t kOddVocab = 97;

// 2 layers, hidden 48, 12 heads (and KV heads) of 4, intermediate 36, 64 positions: tp 2, 3 and
// 4 divide everything but the vocabulary.
io::ModelConfig odd_vocab_config(bool tied);

enum class OddVocabWeights {
  kRandom,  // every matrix uniform in [-0.4, 0.4), norm weights in [0.8, 1.2)
  // Untied only. Every real logit is negative whatever the input: o_proj and down_proj are zero
  // (the residual stream is the token's embedding), embeddings in [0.5, 1.5) and each head row
  // -1/sqrt(hidden) plus zero-mean noise. A padded id with a zero row would have logit 0: it would
  // win every argmax and dominate the log-sum-exp, if it had a logit at all.
  kPaddingWouldWin,
};

// The whole weights of `config` by HF name, reproducible from `seed`.
std::map<std::string, Tensor> odd_vocab_weights(const io::ModelConfig& config, OddVocabWeights kind,
                                                uint64_t seed);

// A model of `config` laid over `parallel` (default: one rank) holding `weights`, each rank its
// shard of them.
std::unique_ptr<models::CausalLM> model_with_weights(const io::ModelConfig& config,
                                                     const std::map<std::string, Tensor>& weights,
                                                     const models::ParallelOptions& parallel = {});

// A Hugging Face model directory: DIR/config.json and DIR/model.safetensors (f32).
void write_model_dir(const std::string& dir, const io::ModelConfig& config,
                     const std::map<std::string, Tensor>& weights);

}  // namespace weft::testing
