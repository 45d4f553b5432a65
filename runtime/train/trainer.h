// The training loop of `weft train` over a Mesh: tensor parallelism (optionally with Megatron
// sequence parallelism), pipeline parallelism (1F1B or interleaved, over micro-batches), data
// parallelism with the gradient all-reduce overlapped with the backward (or ZeRO-1), AdamW,
// metrics, asynchronous sharded checkpoints, and resume under any mesh.
//
// Loss and gradient scaling (DESIGN.md): every rank back-propagates its loss sum divided by the
// GLOBAL count of predicted tokens, and gradients are summed over dp, so the result equals one
// rank running the whole batch.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "kernels/ops.h"
#include "models/causal_lm.h"
#include "parallel/mesh.h"
#include "runtime/core/clock.h"
#include "runtime/train/checkpoint.h"
#include "runtime/train/optimizer.h"
#include "runtime/train/token_data.h"

namespace weft::train {

struct TrainOptions {
  std::string model_dir;     // HF model directory (config.json + weights)
  bool init_random = false;  // the model dir has only config.json: initialise from `seed`
  std::string data_path;
  int64_t steps = 0;         // the step to stop at (a resumed run continues to it)
  int64_t global_batch = 0;  // sequences per step, over all dp ranks
  int64_t seq_len = 0;       // must equal the token file's line length
  kernels::AdamWConfig adamw;
  double clip_grad = 0;  // 0 = no clipping
  std::string save_dir;
  std::string load_dir;
  int64_t save_every = 0;  // 0 = only at the end
  int64_t keep_last = 0;   // keep only the newest N complete checkpoints (0 = all)
  std::string metrics_path;
  int64_t log_every = 1;
  uint64_t seed = 0;
  // Parallelism: dp = world / (tp * pp * sp).
  int tp = 1;
  int pp = 1;
  int sp = 1;  // sequence parallelism: each sequence split over sp ranks
  parallel::SpAttnAlgo sp_attn = parallel::SpAttnAlgo::kRing;
  parallel::SpLinearAlgo sp_linear = parallel::SpLinearAlgo::kZeco;
  int sp_ulysses = 1;       // usp: Ulysses group size
  int pp_virtual = 1;       // interleaved chunks per pipeline rank
  int64_t micro_batch = 0;  // sequences per micro-batch (0: the whole per-rank batch)
  bool sequence_parallel = false;
  bool zero1 = false;               // shard AdamW state over dp x sp (every replica of the weights)
  bool overlap_grad_reduce = true;  // start dp reduction buckets during the backward
  bool sync_save = false;           // block on each checkpoint write (baseline for the async save)
};

// Collective agreement on a status (see launch/session.h); identity on one rank.
using AgreeFn = std::function<absl::Status(absl::Status)>;

struct StepMetrics {
  int64_t step = 0;
  double loss = 0;
  double grad_norm = 0;
  double lr = 0;
  double step_time_s = 0;
  double tokens_per_s = 0;
  int64_t peak_bytes = 0;  // highest live tensor bytes on this rank during the step
  // The loop's wait this step for checkpoints: the snapshot of the save in flight, and before a
  // new save, the write of the previous one (with sync_save, all of this step's own save).
  double checkpoint_wait_s = 0;
};

class Trainer {
 public:
  // Builds the mesh, loads data, model and (with load_dir) the checkpoint on every rank, and
  // validates options against them before any work. Collective over `world`: agrees on errors.
  static absl::StatusOr<std::unique_ptr<Trainer>> create(const TrainOptions& options,
                                                         comm::Communicator& world, AgreeFn agree);

  // Runs steps start_step()+1 .. options.steps. Collective.
  absl::Status run();

  [[nodiscard]] int64_t start_step() const { return start_step_; }
  [[nodiscard]] const parallel::Mesh& mesh() const { return *mesh_; }
  [[nodiscard]] models::CausalLM& model() { return *model_; }
  [[nodiscard]] const std::vector<StepMetrics>& history() const { return history_; }
  // Total seconds the loop waited on checkpoint snapshots.
  [[nodiscard]] double checkpoint_wait_seconds() const { return checkpoint_wait_s_; }

 private:
  // Adds the time since `start` (a wait of the loop for checkpoints) to m and the run's total.
  void count_checkpoint_wait(StepMetrics& m, SteadyClock::time_point start);
  Trainer(const TrainOptions& options, std::unique_ptr<parallel::Mesh> mesh, AgreeFn agree,
          TokenFile data);
  absl::Status validate_batch() const;
  absl::Status load_model();
  absl::Status restore(const CheckpointReader& checkpoint);
  // This step's summed loss over this rank's micro-batches (every rank of a pipeline gets it).
  double run_microbatches(const Tensor& tokens, float loss_scale);
  StepMetrics train_step(int64_t step);
  void start_save(int64_t step);
  absl::Status append_metrics(const StepMetrics& m);

  TrainOptions options_;
  std::unique_ptr<parallel::Mesh> mesh_;
  AgreeFn agree_;
  TokenFile data_;
  std::unique_ptr<models::CausalLM> model_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<CheckpointWriter> writer_;  // every rank (saves are collective)
  int64_t start_step_ = 0;
  std::vector<StepMetrics> history_;
  double checkpoint_wait_s_ = 0;
};

}  // namespace weft::train
