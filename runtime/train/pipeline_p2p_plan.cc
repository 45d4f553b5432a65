#include "runtime/train/pipeline_p2p_plan.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace weft::train {

ActionPeers action_peers(const ScheduleShape& shape, const PipelineAction& action) {
  const int stage = action.chunk * shape.pp + shape.pp_rank;
  const bool first = stage == 0;
  const bool last = stage == shape.pp * shape.virtual_chunks - 1;
  if (action.is_forward()) return {!first, !last, stage - 1, stage + 1};
  return {!last, !first, stage + 1, stage - 1};
}

absl::StatusOr<P2PPlan> pipeline_p2p_plan(const ScheduleShape& shape, int window) {
  if (window < 0) {
    return absl::InvalidArgumentError(absl::StrCat("receive window ", window, " must be >= 0"));
  }
  absl::StatusOr<std::vector<PipelineAction>> actions = pipeline_schedule(shape);
  if (!actions.ok()) return actions.status();
  P2PPlan plan{std::move(*actions), {}};
  std::vector<int> receiving;  // indices of the actions that receive, in order
  for (size_t i = 0; i < plan.actions.size(); ++i) {
    if (action_peers(shape, plan.actions[i]).receives) receiving.push_back(static_cast<int>(i));
  }
  using Kind = P2POp::Kind;
  size_t posted = 0;  // receives posted so far
  size_t waited = 0;  // receives waited on so far
  for (size_t i = 0; i < plan.actions.size(); ++i) {
    const ActionPeers peers = action_peers(shape, plan.actions[i]);
    // Keep the receives of this action and the next `window` receiving actions posted.
    while (posted < receiving.size() && posted <= waited + window) {
      plan.ops.push_back({Kind::kPostRecv, receiving[posted++]});
    }
    if (peers.receives) {
      plan.ops.push_back({Kind::kWaitRecv, static_cast<int>(i)});
      ++waited;
    }
    plan.ops.push_back({Kind::kRun, static_cast<int>(i)});
    if (peers.sends) plan.ops.push_back({Kind::kPostSend, static_cast<int>(i)});
  }
  return plan;
}

}  // namespace weft::train
