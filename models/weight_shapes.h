// The Hugging Face tensors a config.json implies, with their global shapes and how tensor
// parallelism cuts them, computed from the config alone: a model directory's weights are
// compared with its config before any memory is taken (an absurd hidden_size is a message, not
// an abort in the allocator), and an offline reshard cuts each tensor as the model on the target
// mesh holds it. A unit test holds this list equal to the parameters a built model holds.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "runtime/core/tensor.h"
#include "runtime/io/model_config.h"
#include "runtime/io/safetensors.h"

namespace weft::models {

// How tensor parallelism cuts a weight (models/tp_context.h): not at all; evenly (TpContext::
// even); the vocabulary's padded blocks (vocab); KV-head blocks, replicated over tp / Hkv ranks
// when tp exceeds the KV heads (kv); or as the MoE expert context decides (over tp when ep = etp
// = 1, else over etp, or whole on the expert's ep host).
enum class TpSplit { kNone, kEven, kVocab, kKvHeads, kExpert };

struct WeightShape {
  std::string name;  // HF name: "model.layers.0.self_attn.q_proj.weight"
  Shape shape;       // global shape
  TpSplit split = TpSplit::kNone;
  int split_dim = -1;  // the dimension cut (split != kNone)
};

// Every weight of the model `config` describes, in model order (embedding, layers, final norm,
// LM head unless tied).
std::vector<WeightShape> hf_weight_shapes(const io::ModelConfig& config);

// Each weight of `config` is in `weights` with the implied shape and a float dtype. Errors name
// the tensor, the directory and both shapes. Reads headers only.
absl::Status check_weights_match_config(const io::ModelConfig& config,
                                        const io::WeightSource& weights);

}  // namespace weft::models
