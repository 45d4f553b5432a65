#include "runtime/train/pipeline_schedule.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace weft::train {
namespace {

using Kind = PipelineAction::Kind;

absl::Status check_shape(const ScheduleShape& s) {
  if (s.pp < 1) return absl::InvalidArgumentError(absl::StrCat("--pp ", s.pp, " must be >= 1"));
  if (s.pp_rank < 0 || s.pp_rank >= s.pp) {
    return absl::InvalidArgumentError(
        absl::StrCat("pipeline rank ", s.pp_rank, " is outside [0, ", s.pp, ")"));
  }
  if (s.virtual_chunks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--pp-virtual ", s.virtual_chunks, " must be >= 1"));
  }
  if (s.micro_batches < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--micro-batches ", s.micro_batches, " must be >= 1"));
  }
  if (s.virtual_chunks > 1 && s.pp == 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--pp-virtual ", s.virtual_chunks, " needs --pp > 1"));
  }
  if (s.virtual_chunks > 1 && s.micro_batches % s.pp != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--micro-batches ", s.micro_batches,
                                                   " is not a multiple of --pp ", s.pp,
                                                   ", as the interleaved schedule needs"));
  }
  return absl::OkStatus();
}

// The k-th forward (or backward) of the rank, in Megatron's interleaved order. With v = 1 this
// is micro-batch k on chunk 0, so both schedules share it.
PipelineAction nth_action(const ScheduleShape& s, Kind kind, int k) {
  const int group = s.pp * s.virtual_chunks;
  const int chunk_in_order = (k % group) / s.pp;
  const int chunk = kind == Kind::kForward ? chunk_in_order : s.virtual_chunks - 1 - chunk_in_order;
  return {kind, (k / group) * s.pp + k % s.pp, chunk};
}

// Forwards before the first backward.
int warmup_forwards(const ScheduleShape& s, int total) {
  if (s.forward_only) return total;
  if (s.virtual_chunks == 1) return std::min(s.pp - s.pp_rank - 1, total);
  if (s.micro_batches == s.pp) return total;
  return std::min(2 * (s.pp - s.pp_rank - 1) + (s.virtual_chunks - 1) * s.pp, total);
}

}  // namespace

std::string action_str(const PipelineAction& action, bool with_chunk) {
  std::string out = absl::StrCat(action.is_forward() ? "F" : "B", action.micro_batch);
  if (with_chunk) absl::StrAppend(&out, ".", action.chunk);
  return out;
}

std::string schedule_str(const std::vector<PipelineAction>& actions, bool with_chunk) {
  std::string out;
  for (const PipelineAction& a : actions) {
    if (!out.empty()) out += ' ';
    out += action_str(a, with_chunk);
  }
  return out;
}

absl::StatusOr<std::vector<PipelineAction>> pipeline_schedule(const ScheduleShape& shape) {
  if (absl::Status status = check_shape(shape); !status.ok()) return status;
  const int total = shape.micro_batches * shape.virtual_chunks;
  const int warmup = warmup_forwards(shape, total);
  std::vector<PipelineAction> actions;
  actions.reserve(shape.forward_only ? total : 2 * total);
  for (int k = 0; k < warmup; ++k) actions.push_back(nth_action(shape, Kind::kForward, k));
  if (shape.forward_only) return actions;
  // Steady state: one forward, one backward; then the cool-down drains the backwards.
  const int steady = total - warmup;
  for (int k = 0; k < steady; ++k) {
    actions.push_back(nth_action(shape, Kind::kForward, warmup + k));
    actions.push_back(nth_action(shape, Kind::kBackward, k));
  }
  for (int k = steady; k < total; ++k) actions.push_back(nth_action(shape, Kind::kBackward, k));
  return actions;
}

}  // namespace weft::train
