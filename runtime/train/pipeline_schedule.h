// Pipeline schedules as data: the ordered actions one pp rank runs in one training step.
//
// 1F1B (v = 1): rank r of pp runs (pp - r - 1) warm-up forwards, then alternates one forward and
// one backward, then drains the remaining backwards. At most pp - r micro-batches are in flight
// (forwarded, not yet backwarded), which bounds the stored activations.
//
// Interleaved 1F1B (v > 1, Megatron 2021, schedules.py): the rank holds v chunks; chunk c is
// virtual stage c*pp + r. The k-th forward runs micro-batch (k / (pp*v))*pp + k % pp on chunk
// (k / pp) % v; the k-th backward runs the same micro-batch on chunk v - 1 - (k / pp) % v.
// Warm-up: 2*(pp - r - 1) + (v - 1)*pp forwards (all of them when m == pp); needs m % pp == 0.
//
// Example, pp=2, m=4, 1F1B:  rank 0: F0 F1 B0 F2 B1 F3 B2 B3;  rank 1: F0 B0 F1 B1 F2 B2 F3 B3.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace weft::train {

struct PipelineAction {
  enum class Kind { kForward, kBackward };
  Kind kind = Kind::kForward;
  int micro_batch = 0;
  int chunk = 0;  // this rank's chunk; virtual stage chunk * pp + pp_rank

  [[nodiscard]] bool is_forward() const { return kind == Kind::kForward; }
  bool operator==(const PipelineAction& other) const = default;
};

// "F3" (forward of micro-batch 3), "B1.0" (backward of micro-batch 1 on chunk 0): chunks are
// written only when v > 1.
std::string action_str(const PipelineAction& action, bool with_chunk);
// The whole list, space-separated, for test tables and logs.
std::string schedule_str(const std::vector<PipelineAction>& actions, bool with_chunk);

struct ScheduleShape {
  int pp = 1;                 // pipeline ranks
  int pp_rank = 0;            // this rank's stage, 0..pp-1
  int virtual_chunks = 1;     // v: chunks per rank
  int micro_batches = 1;      // m
  bool forward_only = false;  // evaluation: every forward in schedule order, no backward
};

// 1F1B for v = 1, interleaved 1F1B for v > 1. Errors name the bad value: a degree < 1, a rank
// outside [0, pp), v > 1 with pp = 1, or m not a multiple of pp under interleaving
// ("--micro-batches 6 is not a multiple of --pp 4, as the interleaved schedule needs").
absl::StatusOr<std::vector<PipelineAction>> pipeline_schedule(const ScheduleShape& shape);

}  // namespace weft::train
