// How one model is laid over a mesh: the degrees checked against the model's shapes (before any
// work), this rank's tensor-parallel position and its pipeline chunks.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "models/causal_lm.h"
#include "models/expert_context.h"
#include "models/tp_context.h"
#include "parallel/pipeline_layout.h"
#include "runtime/io/model_config.h"

namespace weft::models {

struct ModelLayout {
  const parallel::Mesh* mesh = nullptr;  // null: one rank
  TpContext tp;
  ExpertContext experts;  // the MoE view of this stage (plain when ep = etp = 1)
  Recompute recompute = Recompute::kNone;
  int64_t streambp = 0;      // StreamBP: rows (head) and positions (layers) per chunk (0: off)
  int64_t seco = 0;          // SeCO: positions per chunk (0: off)
  bool token_weave = false;  // TokenWeave under tp (serving, and training with sequence_parallel)
  int64_t spaco_keep = 0;
  uint64_t spaco_seed = 0;
  bool sequence_parallel = false;
  // Sequence parallelism: the sp group, how the sequence is split over it, the algorithms.
  int sp = 1;
  int sp_rank = 0;
  comm::Communicator* sp_group = nullptr;
  parallel::SpLayout sp_layout;
  parallel::SpAttnAlgo sp_attn = parallel::SpAttnAlgo::kRing;
  parallel::SpLinearAlgo sp_linear = parallel::SpLinearAlgo::kZeco;
  int sp_ulysses = 1;
  int pp = 1;
  int pp_rank = 0;
  int stages = 1;                            // virtual stages: pp * pp_virtual
  std::vector<parallel::LayerRange> chunks;  // this rank's, in chunk order
};

// Errors name the flag and the value: "--tp 3 does not divide num_attention_heads 8". tp must
// divide the heads, the KV heads (or, when larger, be a multiple of them) and the (experts')
// intermediate size. The vocabulary may be any size (padded to a multiple of tp, sharding.h),
// as long as the last tp rank holds at least one id of it.
// Under sp, the algorithms must fit the model and each other (usp's Ulysses size divides sp;
// Ulysses needs at least sp query heads per tp rank; ZeCO follows a contiguous or per-rank
// zigzag layout). --ep/--etp need an MoE model, ep dividing the experts and etp their
// intermediate size (tp then no longer splits the experts); an expert capacity needs whole
// sequences on the ranks that route them.
// The mesh checks that depend only on the model's shapes (tp against heads, KV heads,
// intermediate size and vocabulary; pp x pp_virtual against the layers; ep and etp against the
// experts): one validator for training, evaluation and offline resharding.
absl::Status check_mesh_fits(const io::ModelConfig& config, const parallel::ParallelDims& dims,
                             int pp_virtual = 1);

absl::StatusOr<ModelLayout> plan_layout(const io::ModelConfig& config,
                                        const ParallelOptions& parallel);

}  // namespace weft::models
