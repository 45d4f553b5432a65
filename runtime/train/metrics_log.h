// The training metrics file (`--metrics M.jsonl`): one JSON object per line and step, written
// by world rank 0 with nlohmann-json so that every line parses with a strict JSON parser, also
// when a value is NaN or infinite (written as null and named in "nonfinite"). Every write is
// checked: a full disk fails the run instead of leaving a truncated line behind.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace weft::train {

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
  // With an MoE expert capacity: the share of the step's (token, expert) choices dropped, over
  // every rank and layer; negative when there is no capacity (not written).
  double moe_drop_rate = -1;
  // With a load-balancing loss: its value this step, mean over MoE layers and micro-batches
  // (not part of `loss`); negative when off (not written).
  double moe_aux_loss = -1;
  // --skip-nonfinite skipped this step's optimizer update (written only when true).
  bool skipped = false;
  // --eval-data: the validation loss of the weights after this step's update, on evaluation
  // steps (written only then; null when not finite).
  std::optional<double> eval_loss;
};

// {"step": 3, "loss": 4.5, ...}; a non-finite value is null and its key is listed in
// "nonfinite": ["loss", ...].
std::string metrics_json_line(const StepMetrics& m);

class MetricsLog {
 public:
  // Opens `path` for appending. A fresh run (resume_step 0) empties it; a resumed run keeps only
  // the records of steps <= resume_step (a crashed run may have logged steps past its last
  // checkpoint, and a partial last line), rewritten atomically, so no step appears twice.
  static absl::StatusOr<MetricsLog> open(const std::string& path, int64_t resume_step);
  MetricsLog(MetricsLog&& other) noexcept;
  MetricsLog& operator=(MetricsLog&& other) noexcept;
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  ~MetricsLog();

  // Appends one line; an error names the file and the system's reason (ENOSPC: disk full).
  absl::Status append(const StepMetrics& m);
  // Closes the file, reporting a failure of the last write-back.
  absl::Status close();

 private:
  MetricsLog(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}

  std::string path_;
  int fd_ = -1;
};

}  // namespace weft::train
