// What one (micro-batch, pipeline chunk) of the Transformer keeps between its forward and its
// backward: models/transformer.cc and models/transformer_seco.cc share it.
#pragma once

#include <memory>
#include <vector>

#include "models/transformer.h"

namespace weft::models {

// What one (micro-batch, chunk) keeps between its forward and its backward.
struct Transformer::ChunkSaved final : ChunkState {
  TokenBatch batch;
  Tensor ids;      // [N]
  Tensor targets;  // [N] i64, -1 where nothing is predicted (last stage)
  std::vector<DecoderBlock::Saved> blocks;
  std::vector<Tensor> block_inputs;  // --recompute full, --streambp: each block's input only
  std::vector<std::vector<float>> moe_balance;        // --streambp: each MoE block's aux gradient
  std::vector<std::unique_ptr<MixerStream>> streams;  // --seco: each block's keys and values
  RmsNorm::Saved final_norm;
  Tensor normed;                 // [N, D] input of the LM head (all rows)
  Tensor logits;                 // [N, V_r]
  Tensor lse;                    // [N] over the whole vocabulary
  bool logits_returned = false;  // returned to the caller: backward must not overwrite them
};

}  // namespace weft::models
