// Runs one training step's micro-batches through the model's pipeline chunks on this rank,
// following pipeline_schedule.h, with the activations and their gradients passed between pp
// ranks by asynchronous send/recv over mesh.pp().
//
//   model.zero_grad();
//   WEFT_ASSIGN_OR_RETURN(PipelineStepResult r,
//                         run_pipeline_step(model, &mesh, micro_batches,
//                                           {.loss_scale = 1.0f / global_predicted}));
//   // grads are final (finish_grads has run); r.loss_sum is the same on every pp rank
//
// Communication follows pipeline_p2p_plan.h: each receive is posted two receiving actions ahead
// of the action that needs it (so it overlaps the compute before it, with at most three receive
// buffers alive), each send right after the compute that produces it, and the sends are waited
// on at the end of the step. pipeline_schedule_test runs every rank's plan together under the
// MPI backend's rule (works complete in submission order, comm/mpi_worker.h) and finds no
// deadlock. Tags name (activation or gradient, micro-batch, receiving virtual stage). Received
// tensors are [b, T, hidden] f32 ([b, T/tp, hidden] under sequence parallelism), on the device
// of the model's parameters. The NCCL backend ignores tags and runs sends and receives in order
// on one stream: 1F1B there needs grouped send/recv (ncclGroupStart/End), which communicator.h
// does not offer yet, so this executor is for the MPI backend.
//
// With pp = 1 the step is gradient accumulation: forward then backward per micro-batch.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "models/causal_lm.h"
#include "parallel/mesh.h"
#include "runtime/core/tensor.h"

namespace weft::train {

struct PipelineStepOptions {
  // The last stage's backward starts from loss_sum * loss_scale (1 / the global count of
  // predicted tokens for the mean loss).
  float loss_scale = 1.0f;
  // Evaluation: forwards only; no backward and no finish_grads.
  bool forward_only = false;
};

struct PipelineStepResult {
  // Sum over the micro-batches of the summed next-token loss, computed on the last pp rank and
  // broadcast over mesh.pp(), so it is the same on every rank of the pipeline group.
  double loss_sum = 0;
};

// micro_batches: this rank's micro-batch tokens, each [b, T] i64; every pp rank of a pipeline
// group passes the same list. The model's num_chunks() is the virtual chunk count v. A null mesh
// means one rank. Adds into the parameter grads (the caller zeroes them) and calls
// model.finish_grads() once at the end. Errors: no micro-batches, or a schedule that cannot be
// built (pipeline_schedule), or more micro-batches than the message tags can name.
absl::StatusOr<PipelineStepResult> run_pipeline_step(models::CausalLM& model,
                                                     const parallel::Mesh* mesh,
                                                     const std::vector<Tensor>& micro_batches,
                                                     const PipelineStepOptions& options = {});

}  // namespace weft::train
