// weft checkpoints (DESIGN.md, ALGORITHMS.md "Asynchronous checkpoints"):
//
//   CKPT/step-00000040/manifest.pb            CheckpointManifest (runtime/io/checkpoint.proto)
//   CKPT/step-00000040/shard-00000.safetensors tensors (weights under HF names, AdamW moments as
//                                              "<name>.exp_avg" / "<name>.exp_avg_sq")
//
// A checkpoint is written into "step-N.tmp" and renamed when complete, so a crash never leaves
// a half-written checkpoint under a final name and never touches older ones. The newest
// complete checkpoint of a directory is the highest step-N that has a manifest.
//
// Saving is asynchronous: save_async() returns at once; a background thread first copies the
// tensors to host buffers (the snapshot), then writes and renames. The training loop calls
// wait_snapshot() before the next optimizer step changes the tensors — its only wait.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/core/tensor.h"
#include "runtime/io/checkpoint.pb.h"

namespace weft::train {

// One tensor as this rank holds it: the slice [offsets, offsets + value.shape) of a tensor of
// `global_shape`.
struct CheckpointTensor {
  std::string name;
  Tensor value;
  Shape global_shape;
  std::vector<int64_t> offsets;  // empty = whole tensor
};

class CheckpointWriter {
 public:
  CheckpointWriter();
  ~CheckpointWriter();  // finishes the save in flight
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Starts saving `tensors` as checkpoint `manifest.step()` under `dir`. Waits first for the
  // previous save to finish. The tensors must not change until wait_snapshot() returns.
  void save_async(const std::string& dir, io::CheckpointManifest manifest,
                  std::vector<CheckpointTensor> tensors);
  // Blocks until the save in flight has copied its tensors.
  void wait_snapshot();
  // Blocks until the save in flight is on disk; returns its status (OK when none).
  absl::Status wait();
  // Seconds the last save spent copying and writing (in the background).
  [[nodiscard]] double last_snapshot_seconds() const { return snapshot_seconds_; }
  [[nodiscard]] double last_write_seconds() const { return write_seconds_; }

 private:
  void run(std::string dir, io::CheckpointManifest manifest, std::vector<CheckpointTensor> tensors);

  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool snapshot_done_ = true;
  absl::Status status_;
  double snapshot_seconds_ = 0;
  double write_seconds_ = 0;
};

// Saves synchronously (save_async + wait).
absl::Status save_checkpoint(const std::string& dir, io::CheckpointManifest manifest,
                             std::vector<CheckpointTensor> tensors);

// "DIR/step-00000040" for the newest complete checkpoint in `dir`; `dir` itself when it is a
// checkpoint (has manifest.pb). NotFound when there is none.
absl::StatusOr<std::string> find_latest_checkpoint(const std::string& dir);

struct LoadedCheckpoint {
  std::string path;
  io::CheckpointManifest manifest;
  std::map<std::string, Tensor> tensors;  // whole (global) f32 tensors by name
};

// Reads a checkpoint directory (or the newest under a parent) and assembles every tensor from
// its chunks. Errors name the file: missing manifest, missing or truncated shard, a chunk that
// does not fit its tensor.
absl::StatusOr<LoadedCheckpoint> load_checkpoint(const std::string& path);

// Checks every shard file's size and SHA-256 against the manifest and that every tensor is
// fully covered by its chunks. OK, or an error listing what is wrong.
absl::Status verify_checkpoint(const std::string& path);

// True for optimizer-state entries ("<name>.exp_avg", "<name>.exp_avg_sq").
bool is_optimizer_state(const std::string& name);

}  // namespace weft::train
