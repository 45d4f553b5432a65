// The Transformer's state that its source files share (models/transformer.cc, transformer_seco.cc,
// transformer_shift.cc, transformer_weave*.cc): what a (micro-batch, pipeline chunk) keeps between
// its forward and its backward, and the paged KV cache.
#pragma once

#include <memory>
#include <vector>

#include "models/transformer.h"

namespace weft::models {

// The serving KV cache: one per softmax-attention layer of this rank.
class Transformer::PagedState final : public PagedKvCache {
 public:
  std::vector<std::unique_ptr<MixerCache>> layers;  // this rank's decoder layers, in order
};

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
  // --token-weave: each half's sequences (batch, ids, blocks and final_norm of its own rows).
  std::vector<ChunkSaved> halves;
};

}  // namespace weft::models
