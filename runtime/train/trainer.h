// The training loop of `weft train` over a Mesh: tensor parallelism (optionally with Megatron
// sequence parallelism), pipeline parallelism (1F1B or interleaved, over micro-batches), data
// parallelism with the gradient all-reduce overlapped with the backward (or ZeRO-1), AdamW,
// metrics, asynchronous sharded checkpoints, and resume under any mesh.
//
// Loss and gradient scaling (docs/architecture.md): every rank back-propagates its loss sum divided
// by the GLOBAL count of predicted tokens, and gradients are summed over dp, so the result equals
// one rank running the whole batch.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "kernels/ops.h"
#include "models/causal_lm.h"
#include "parallel/mesh.h"
#include "runtime/core/clock.h"
#include "runtime/train/checkpoint.h"
#include "runtime/train/lr_schedule.h"
#include "runtime/train/metrics_log.h"
#include "runtime/train/optimizer.h"
#include "runtime/train/token_data.h"

namespace weft::train {

struct TrainOptions {
  std::string model_dir;     // HF model directory (config.json + weights)
  bool init_random = false;  // the model dir has only config.json: initialise from `seed`
  std::string data_path;     // a token FILE, or a directory of `weft data prepare`
  uint64_t data_seed = 0;    // a directory's shuffle (--data-seed; the CLI defaults it to `seed`)
  // --eval-data: a token file (lines of seq_len ids) for a validation loss, computed after the
  // update of every eval_every-th step (0: only the last) over eval_batches global batches (0:
  // every whole batch of the file).
  std::string eval_data_path;
  int64_t eval_every = 0;
  int64_t eval_batches = 0;
  int64_t steps = 0;         // the step to stop at (a resumed run continues to it)
  int64_t global_batch = 0;  // sequences per step, over all dp ranks
  int64_t seq_len = 0;       // a token FILE's line length, or a directory's sample length
  kernels::AdamWConfig adamw;
  double clip_grad = 0;  // 0 = no clipping
  // --lr-schedule / --warmup-steps / --min-lr / --lr-decay-steps (peak: adamw.lr).
  LrDecay lr_decay = LrDecay::kConstant;
  int64_t warmup_steps = 0;
  double min_lr = 0;
  int64_t lr_decay_steps = 0;  // 0: `steps`
  // --skip-nonfinite: a step whose loss or gradient norm is not finite is skipped (no optimizer
  // step, counted in the metrics) instead of stopping the run.
  bool skip_nonfinite = false;
  std::string save_dir;
  std::string load_dir;
  // --load DIR whose newest checkpoint is damaged: resume from the newest older one that loads
  // (a warning) instead of refusing.
  bool load_fallback = false;
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
  int sp_ulysses = 1;  // usp: Ulysses group size
  int ep = 1;          // MoE: experts over ep ranks of a stage, each split over etp
  int etp = 1;
  double moe_capacity_factor = 0;  // per-sequence expert capacity (0 = dropless)
  double moe_aux_loss_coef = 0;    // load-balancing loss coefficient (0 = off)
  models::Recompute recompute = models::Recompute::kNone;  // --recompute
  int64_t streambp = 0;    // --streambp: rows (head) and positions (layers) per chunk (0: off)
  int64_t seco = 0;        // --seco: positions per chunk (0: off)
  int64_t spaco_keep = 0;  // --spaco-keep: chunks back-propagated, about (0: all)
  // --speculative-moe: the per-layer expert placement (models/expert_context.h).
  std::vector<std::vector<int64_t>> expert_placement;
  bool speculative_moe = false;
  int pp_virtual = 1;       // interleaved chunks per pipeline rank
  int64_t micro_batch = 0;  // sequences per micro-batch (0: the whole per-rank batch)
  bool sequence_parallel = false;
  // TokenWeave (docs/algorithms.md "TokenWeave in training"): Megatron-SP's layout with each
  // micro-batch's sequences in two halves whose tp collectives overlap the other's compute.
  bool token_weave = false;
  bool zero1 = false;               // shard AdamW state over dp x sp (every replica of the weights)
  bool overlap_grad_reduce = true;  // start dp reduction buckets during the backward
  bool sync_save = false;           // block on each checkpoint write (baseline for the async save)
};

// Collective agreement on a status (see launch/session.h); identity on one rank.
using AgreeFn = std::function<absl::Status(absl::Status)>;

class Trainer {
 public:
  // Builds the mesh, loads data, model and (with load_dir) the checkpoint on every rank, and
  // validates options against them before any work. Collective over `world`: agrees on errors.
  static absl::StatusOr<std::unique_ptr<Trainer>> create(const TrainOptions& options,
                                                         comm::Communicator& world, AgreeFn agree);

  // Runs steps start_step()+1 .. options.steps. Collective. Stops early, every rank at the same
  // step boundary, when a background save failed (an error naming it; the newest complete
  // checkpoint is kept), when the loss or gradient norm is not finite (an error naming the step;
  // the weights are not updated), or on SIGTERM/SIGUSR1 (saves a checkpoint when saving, and
  // returns a status asking for exit code kExitStopped). A run whose checkpoint already reached
  // --steps does nothing and returns OK.
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
          std::unique_ptr<TokenDataset> data);
  absl::Status validate_batch() const;
  absl::Status load_model();
  // Resumes from the newest checkpoint under options.load_dir that every rank restores, falling
  // back past damaged ones only with load_fallback. Collective.
  absl::Status resume();
  absl::Status restore(const CheckpointReader& checkpoint);
  // Rank 0 removes leftovers of interrupted saves ("step-N.tmp") in the save directory.
  absl::Status remove_save_leftovers();
  // Every rank's view at the end of a step, agreed: a finished save that failed, a stop signal.
  struct Boundary {
    bool save_failed = false;
    int stop_signal = 0;
  };
  Boundary step_boundary();
  // Saves step `step` (waiting for the previous save first) and, with `wait`, until on disk.
  absl::Status save(int64_t step, StepMetrics& m, bool wait);
  // This step's summed loss over this rank's micro-batches (every rank of a pipeline gets it);
  // forward_only: an evaluation (no backward, no gradients).
  double run_microbatches(const Tensor& tokens, float loss_scale, bool forward_only = false);
  StepMetrics train_step(int64_t step);
  // Micro-batches per step on each rank.
  [[nodiscard]] int64_t micro_batches() const;
  // The MoE metrics of the step (the share of choices dropped, with a capacity; the
  // load-balancing loss, when on); resets the layers' counters. Collective over the world.
  void moe_metrics(StepMetrics& m);
  void start_save(int64_t step);
  // --eval-data (runtime/train/trainer_eval.cc): loads and checks it against the options and the
  // model; evaluate() is the mean loss over its batches, forward only. Collective.
  absl::Status load_eval_data();
  [[nodiscard]] bool eval_due(int64_t step) const;
  double evaluate();

  TrainOptions options_;
  std::unique_ptr<parallel::Mesh> mesh_;
  AgreeFn agree_;
  std::unique_ptr<TokenDataset> data_;
  std::unique_ptr<TokenDataset> eval_data_;  // --eval-data: a token file or a data directory
  std::unique_ptr<models::CausalLM> model_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<CheckpointWriter> writer_;  // every rank (saves are collective)
  int64_t start_step_ = 0;
  // Recorded in every checkpoint: --model made absolute, else what the restored checkpoint says.
  std::string source_model_dir_;
  std::optional<MetricsLog> metrics_;  // rank 0, with --metrics
  std::vector<StepMetrics> history_;
  double checkpoint_wait_s_ = 0;
};

}  // namespace weft::train
