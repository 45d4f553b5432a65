// The order in which one pp rank posts its receives, waits on them, runs its actions and posts
// its sends during a pipeline step: the executor follows it op by op, and the unit test runs
// every rank's plan together under the MPI backend's rule (works on one communicator are marked
// done in submission order, comm/mpi_worker.h) to prove it never deadlocks.
//
// A receive is posted `window` receiving actions ahead of the action that needs it, so the
// transfer overlaps the compute before it while at most window + 1 receive buffers are alive
// (posting all of them at once would hold one activation per micro-batch and chunk).
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "runtime/train/pipeline_schedule.h"

namespace weft::train {

// What an action exchanges with its neighbours: a forward receives the previous virtual stage's
// activation and sends its output to the next; a backward receives the next stage's output
// gradient and sends its input gradient to the previous. None at the pipeline's two ends.
struct ActionPeers {
  bool receives = false;
  bool sends = false;
  int from_stage = 0;  // virtual stage the input comes from
  int to_stage = 0;    // virtual stage the output goes to
};
ActionPeers action_peers(const ScheduleShape& shape, const PipelineAction& action);

struct P2POp {
  enum class Kind { kPostRecv, kWaitRecv, kRun, kPostSend };
  Kind kind = Kind::kRun;
  int action = 0;  // index into the schedule
};

struct P2PPlan {
  std::vector<PipelineAction> actions;  // pipeline_schedule(shape)
  std::vector<P2POp> ops;               // then the executor waits on every send
};

// Errors as pipeline_schedule; window >= 0.
absl::StatusOr<P2PPlan> pipeline_p2p_plan(const ScheduleShape& shape, int window);

}  // namespace weft::train
