// `weft plan`: which mesh and memory savers to train a model with on N ranks, from a cost model
// of one training step (docs/planner.md). For every layout the mesh allows (tp x pp x sp x dp,
// ep for MoE, Megatron-SP, micro-batch, recomputation or StreamBP, ZeRO-1) it predicts the
// per-rank peak memory (weights, gradients, AdamW state, activations) and the step time
// (compute at the measured speed of a core, the pipeline bubble, and the bytes each rank sends
// at a link's latency and bandwidth), keeps the layouts that fit the memory, and ranks them by
// predicted step time. bench/scaling/ compares the predictions with measured runs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/io/model_config.h"

namespace weft::train {

// What the machine does, per rank.
struct MachineModel {
  int cores = 1;                 // cores of a node, shared by the ranks on it
  int ranks_per_node = 0;        // 0: every rank on one node
  double flops_per_core = 1e10;  // f32 GEMM flop/s of one core (measure_core_flops)
  // The share of that speed a single-threaded rank's training step achieves over all its work
  // (its norms, softmax and element-wise ops run below GEMM speed), and the share of a step's
  // time that does not speed up with more threads per rank (Amdahl); bench/scaling/ measured
  // both on the 2-core dev machine (docs/planner.md).
  double efficiency = 0.75;
  double serial_share = 0.5;
  // Fixed cost of running one layer's forward or backward on one micro-batch (kernel calls,
  // allocation), whatever its size: what makes small micro-batches slower.
  double layer_overhead_s = 2e-4;
  double latency_s = 1e-4;   // one dependent communication call
  double bytes_per_s = 2e9;  // what one rank sends per second
};

// The run: the model, the ranks and the batch.
struct PlanRequest {
  io::ModelConfig model;
  int ranks = 1;
  int64_t seq_len = 0;
  int64_t global_batch = 0;
  int64_t memory_bytes = 0;  // per rank; 0: no limit
};

// One layout. micro_batch 0: the whole per-rank batch in one micro-batch.
struct Layout {
  int tp = 1, pp = 1, sp = 1, dp = 1, ep = 1;
  bool sequence_parallel = false;
  int64_t micro_batch = 0;
  std::string recompute = "none";  // none, selective, full, streambp
  bool zero1 = false;
  // The `weft train` flags for it.
  [[nodiscard]] std::string flags(int64_t seq_len) const;
};

// The prediction for one layout, per rank (the most loaded one).
struct Prediction {
  Layout layout;
  int64_t weight_bytes = 0;      // weights + gradients
  int64_t optimizer_bytes = 0;   // AdamW moments
  int64_t activation_bytes = 0;  // at the step's peak
  int64_t peak_bytes = 0;        // the sum
  double compute_s = 0;          // with recomputation and the pipeline bubble
  double comm_s = 0;
  double step_s = 0;  // compute + comm (no overlap assumed)
  double tokens_per_s = 0;
  bool fits = true;
};

// Every layout of `request` the mesh rules allow, predicted; fitting ones first, each group by
// step time. Errors: nothing divides (e.g. a prime rank count that the heads do not allow).
absl::StatusOr<std::vector<Prediction>> plan(const PlanRequest& request, const MachineModel& m);

// One given layout (checked against the same rules; an error names the rule it breaks).
absl::StatusOr<Prediction> predict(const PlanRequest& request, const MachineModel& m,
                                   const Layout& layout);

// "tp=2,pp=1,sp=1,dp=2,ep=1" (missing ones 1; dp: the rest of the ranks).
absl::StatusOr<Layout> parse_layout(const std::string& text, int ranks);

// f32 GEMM flop/s of one thread on this machine (a ~0.2 s probe of weft's own GEMM).
double measure_core_flops();

}  // namespace weft::train
