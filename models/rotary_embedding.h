// Rotary position embedding with Hugging Face's rope_scaling types (docs/algorithms.md "RoPE
// scaling"): the inverse frequencies inv_freq [d/2] and the factor on cos and sin as
// transformers' modeling_rope_utils.py computes them (in f32, as its tensors do):
//   default  inv_freq_i = 1 / theta^(2i/d)
//   linear   inv_freq / factor
//   dynamic  theta -> theta * (factor * L / max_pos - (factor - 1))^(d / (d - 2)) when the
//            sequence length L exceeds max_position_embeddings (NTK-aware, Dynamic)
//   yarn     a ramp between inv_freq (fast dims) and inv_freq / factor (slow dims) over the
//            correction range of beta_fast / beta_slow rotations; cos and sin times
//            attention_factor
//   llama3   inv_freq / factor for wavelengths above original_max / low_freq_factor, inv_freq
//            below original_max / high_freq_factor, smoothly blended between
#pragma once

#include <cstdint>
#include <vector>

#include "models/token_batch.h"
#include "runtime/core/tensor.h"
#include "runtime/io/model_config.h"

namespace weft::models {

// What RoPE's frequencies depend on.
struct RopeConfig {
  double theta = 10000.0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  io::RopeScaling scaling;

  static RopeConfig of(const io::ModelConfig& config);
};

struct RopeFrequencies {
  std::vector<float> inv_freq;  // [d/2]
  float attention_factor = 1.0f;
};

// transformers' ROPE_INIT_FUNCTIONS[type](config, seq_len) (_compute_default_rope_parameters,
// _compute_linear_scaling_rope_parameters, _compute_dynamic_ntk_parameters,
// _compute_yarn_parameters, _compute_llama3_parameters). Only dynamic reads `seq_len`.
[[nodiscard]] RopeFrequencies rope_frequencies(const RopeConfig& rope, int64_t seq_len);

// A softmax-attention layer's RoPE. Dynamic scales each call for the length of the sequences
// it belongs to (TokenBatch::rope_len, or per token in a serving step): a whole-sequence forward
// equals transformers' forward over that sequence; decoding with a KV cache rotates each step's
// new keys for the length so far and keeps the cached ones as they were, as transformers'
// generate() does.
class RotaryEmbedding {
 public:
  explicit RotaryEmbedding(const io::ModelConfig& config);

  // x [B, T, H, d] in place: q or k after their projection.
  void forward(Tensor& x, const TokenBatch& batch) const;
  // dx [B, T, H, d] in place: the gradient of forward's output -> of its input.
  void backward(Tensor& dx, const TokenBatch& batch) const;

 private:
  // [d/2], or [T, d/2] for dynamic in a serving step; f32 on `device`.
  [[nodiscard]] Tensor inv_freq(const TokenBatch& batch, Device device) const;

  RopeConfig rope_;
  Tensor fixed_;  // [d/2] f32 on the CPU: every type but dynamic
  float attention_factor_;
};

}  // namespace weft::models
