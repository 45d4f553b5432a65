// How one model is laid over a mesh: the degrees checked against the model's shapes (before any
// work), this rank's tensor-parallel position and its pipeline chunks.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "models/causal_lm.h"
#include "models/tp_context.h"
#include "parallel/pipeline_layout.h"
#include "runtime/io/model_config.h"

namespace weft::models {

struct ModelLayout {
  const parallel::Mesh* mesh = nullptr;  // null: one rank
  TpContext tp;
  bool sequence_parallel = false;
  int pp = 1;
  int pp_rank = 0;
  int stages = 1;                            // virtual stages: pp * pp_virtual
  std::vector<parallel::LayerRange> chunks;  // this rank's, in chunk order
};

// Errors name the flag and the value: "--tp 3 does not divide num_attention_heads 8". tp must
// divide the heads, the KV heads (or, when larger, be a multiple of them), the (experts')
// intermediate size and the vocabulary (no padding: a vocabulary tp does not divide is refused).
// The sp and ep degrees must be 1 (the model has no sequence/expert-parallel layers yet).
absl::StatusOr<ModelLayout> plan_layout(const io::ModelConfig& config,
                                        const ParallelOptions& parallel);

}  // namespace weft::models
