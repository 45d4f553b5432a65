// The Hugging Face tensors a config.json implies, with their global shapes, computed from the
// config alone: a model directory's weights are compared with its config before any memory is
// taken (an absurd hidden_size is a message, not an abort in the allocator). A unit test holds
// this list equal to the parameters a built model holds.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "runtime/core/tensor.h"
#include "runtime/io/model_config.h"
#include "runtime/io/safetensors.h"

namespace weft::models {

struct WeightShape {
  std::string name;  // HF name: "model.layers.0.self_attn.q_proj.weight"
  Shape shape;       // global shape
};

// Every weight of the model `config` describes, in model order (embedding, layers, final norm,
// LM head unless tied).
std::vector<WeightShape> hf_weight_shapes(const io::ModelConfig& config);

// Each weight of `config` is in `weights` with the implied shape and a float dtype. Errors name
// the tensor, the directory and both shapes. Reads headers only.
absl::Status check_weights_match_config(const io::ModelConfig& config,
                                        const io::WeightSource& weights);

}  // namespace weft::models
