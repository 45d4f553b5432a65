// weft checkpoints: asynchronous, sharded saving (docs/architecture.md, docs/algorithms.md
// "Asynchronous checkpoints"). Layout and naming: runtime/train/checkpoint_files.h; reading under
// any mesh: runtime/train/checkpoint_reader.h.
//
// Every rank passes the tensors IT writes (the caller dedupes replicas: one dp rank writes a
// replicated weight, replica 0 a KV-replicated one, each ZeRO-1 rank its own moment rows).
// save_async() returns at once; a background thread
//   1. snapshots: copies every tensor to a host buffer (device -> host), then releases
//      wait_snapshot() — the training loop's only wait, before its next optimizer step;
//   2. rank 0 creates CKPT/step-N.tmp; the ranks agree it exists;
//   3. every rank writes shard-<rank>.safetensors and its SHA-256; the manifest parts are
//      gathered to rank 0, which merges them (one entry per tensor with every chunk, checked
//      to tile the tensor), writes manifest.pb and renames step-N.tmp -> step-N;
//   4. every rank learns the outcome: a failure on any rank fails wait() on every rank.
// The collective steps run on a communicator split from `world` when the writer is built, so
// they never mix with the training loop's collectives.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "comm/communicator.h"
#include "runtime/io/checkpoint.pb.h"
#include "runtime/train/checkpoint_files.h"
#include "runtime/train/checkpoint_reader.h"

namespace weft::train {

class CheckpointWriter {
 public:
  // One writer per rank; collective over `world` (splits the checkpoint communicator).
  explicit CheckpointWriter(comm::Communicator& world);
  // A writer for one process alone (rank 0 of 1).
  CheckpointWriter();
  ~CheckpointWriter();  // finishes the save in flight
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Starts saving this rank's `tensors` into checkpoint `manifest.step()` under `dir`
  // (rank 0's manifest supplies step, data position, mesh, config). Every rank of the writer
  // calls it, with the same dir and step. Waits first for the previous save to finish. The
  // tensors must not change until wait_snapshot() returns.
  void save_async(const std::string& dir, io::CheckpointManifest manifest,
                  std::vector<CheckpointTensor> tensors);
  // Blocks until the save in flight has copied its tensors to host memory.
  void wait_snapshot();
  // Blocks until the save in flight is complete on every rank; its status (OK when none), the
  // same on every rank.
  absl::Status wait();
  // Without blocking: the failure of a save that has finished, else OK (also while one is still
  // being written). Local: ranks may see a finished save at different moments.
  absl::Status poll();
  // Seconds the last save spent copying, and writing + agreeing (in the background).
  [[nodiscard]] double last_snapshot_seconds() const { return snapshot_seconds_; }
  [[nodiscard]] double last_write_seconds() const { return write_seconds_; }

 private:
  void run(const std::string& dir, io::CheckpointManifest manifest,
           std::vector<CheckpointTensor> tensors);
  absl::Status write(const std::string& dir, const io::CheckpointManifest& manifest,
                     const std::vector<CheckpointTensor>& host);
  // Every rank's status; the first failure (naming its rank) on every rank.
  absl::Status agree(const absl::Status& mine);
  // Every rank's `bytes`, in rank order.
  std::vector<std::string> all_gather_bytes(const std::string& bytes);
  [[nodiscard]] int rank() const { return comm_ ? comm_->rank() : 0; }

  std::unique_ptr<comm::Communicator> comm_;  // null: a single process
  std::vector<Tensor> host_buffers_;          // the snapshot, reused by the next save
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool snapshot_done_ = true;
  bool write_done_ = true;
  absl::Status status_;
  double snapshot_seconds_ = 0;
  double write_seconds_ = 0;
};

// Saves synchronously on one process (save_async + wait).
absl::Status save_checkpoint(const std::string& dir, io::CheckpointManifest manifest,
                             std::vector<CheckpointTensor> tensors);

}  // namespace weft::train
