// --sp-attn auto and --sp-linear auto: a core that owns one core of each candidate algorithm over
// the same layout and, per forward call, runs the one the cost model (parallel/sp_cost_model.h)
// predicts fastest for that call's shape. The forward's saved state remembers which core ran, so
// the backward runs the same one. Every rank holds the same cost parameters and sees the same
// shape, so every rank makes the same choice (a different one would deadlock).
//
// Candidates, in order of preference on a tie (the least memory first):
//   softmax  ring, ulysses (only when heads >= P), allgather
//   linear   zeco (only on a layout it accepts: contiguous or the zigzag over ranks), lasp2
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "parallel/sp_attention.h"
#include "parallel/sp_cost_model.h"
#include "parallel/sp_linear_attention.h"

namespace weft::parallel {

class AutoSpAttention : public SequenceParallelAttention {
 public:
  [[nodiscard]] virtual const std::vector<SpAttnAlgo>& candidates() const = 0;
  [[nodiscard]] virtual const SpCostParams& costs() const = 0;
  // The candidate the cost model picks for q [B, c, H, d] of `elem_bytes` per value.
  [[nodiscard]] virtual SpAttnAlgo choose(int64_t batch, int64_t tokens, int64_t dim,
                                          int64_t elem_bytes) const = 0;
  // The algorithm the last forward() ran (ring before any forward).
  [[nodiscard]] virtual SpAttnAlgo last_choice() const = 0;
};

// options.algo is ignored (auto); the layout must suit ring (contiguous or the zigzag over ranks).
// Collective over `group` like make_sp_attention, without the calibration probe.
absl::StatusOr<std::unique_ptr<AutoSpAttention>> make_auto_sp_attention(
    comm::Communicator& group, const SpAttentionOptions& options, const SpCostParams& costs);

class AutoSpLinearAttention : public SequenceParallelLinearAttention {
 public:
  [[nodiscard]] virtual const std::vector<SpLinearAlgo>& candidates() const = 0;
  [[nodiscard]] virtual const SpCostParams& costs() const = 0;
  // The candidate the cost model picks for q [B, c, H, d] (states are f32 whatever the dtype).
  [[nodiscard]] virtual SpLinearAlgo choose(int64_t batch, int64_t tokens, int64_t heads,
                                            int64_t dim) const = 0;
  // The algorithm the last forward() ran (the first candidate before any forward).
  [[nodiscard]] virtual SpLinearAlgo last_choice() const = 0;
};

// options.algo is ignored (auto).
absl::StatusOr<std::unique_ptr<AutoSpLinearAttention>> make_auto_sp_linear_attention(
    comm::Communicator& group, const SpLinearOptions& options, const SpCostParams& costs);

}  // namespace weft::parallel
