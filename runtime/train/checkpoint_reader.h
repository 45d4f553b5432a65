// Reading a weft checkpoint under any mesh: every tensor is stored as chunks (boxes of the
// global tensor, runtime/train/checkpoint_chunks.h); read_slice() assembles any box from the
// chunks that intersect it, so a run saved at tp2 x pp2 resumes at pp4 or dp2 by asking each
// parameter's own slice.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/core/tensor.h"
#include "runtime/io/checkpoint.pb.h"
#include "runtime/io/safetensors.h"

namespace weft::train {

class CheckpointReader {
 public:
  // A checkpoint directory, or a parent holding several (the newest is read; when it is damaged,
  // a DataLoss error names it and the newest complete one before it). Reads and checks the
  // manifest (read_manifest); shard files are opened (mapped) only when a read needs them.
  //
  // Every byte read is checked against the manifest's checksums as it is read: a shard's size
  // and header when the file is first opened, each chunk's bytes the first time a read uses it
  // (format 2 checkpoints: the whole file's SHA-256 on first open). A mismatch is a DataLoss
  // error naming the checkpoint, the file and the tensor.
  static absl::StatusOr<std::unique_ptr<CheckpointReader>> open(const std::string& path);

  [[nodiscard]] const std::string& path() const { return path_; }  // the checkpoint directory
  [[nodiscard]] const io::CheckpointManifest& manifest() const { return manifest_; }
  [[nodiscard]] int64_t step() const { return manifest_.step(); }
  [[nodiscard]] int64_t data_position() const { return manifest_.data_position(); }
  [[nodiscard]] const std::string& model_config_json() const {
    return manifest_.model_config_json();
  }
  [[nodiscard]] const io::MeshRecord& mesh() const { return manifest_.mesh(); }
  [[nodiscard]] bool contains(const std::string& name) const { return index_.count(name) > 0; }
  // NotFound naming the checkpoint when `name` is not in it.
  absl::StatusOr<const io::TensorEntry*> entry(const std::string& name) const;
  absl::StatusOr<Shape> global_shape(const std::string& name) const;

  // The f32 CPU tensor [lengths] = box [offsets, offsets + lengths) of tensor `name`, from every
  // stored chunk that intersects it. Errors: the name is missing, the box leaves the tensor, or
  // the stored chunks do not cover it; a shard file missing, corrupt or disagreeing with the
  // manifest.
  absl::StatusOr<Tensor> read_slice(const std::string& name, const std::vector<int64_t>& offsets,
                                    const std::vector<int64_t>& lengths) const;
  // The whole tensor.
  absl::StatusOr<Tensor> read(const std::string& name) const;
  // This rank's shard of a tensor split along `split_dim` (-1: the whole tensor): `length`
  // entries from `offset` along it, everything along the other dims. The common case of a
  // models::ShardSpec: read_shard(name, spec.global_shape, spec.split_dim, spec.offset,
  // value.dim(spec.split_dim)). Also checks that the stored global shape is `global_shape`.
  absl::StatusOr<Tensor> read_shard(const std::string& name, const Shape& global_shape,
                                    int split_dim, int64_t offset, int64_t length) const;

 private:
  CheckpointReader() = default;
  // The shard file `name`, opened and its size and header checked on first use.
  absl::StatusOr<std::shared_ptr<io::SafetensorsFile>> file(const std::string& name) const;
  // The stored bytes of `tensor` in `chunk`, checked against the chunk's checksum once.
  absl::Status check_chunk(const io::SafetensorsFile& file, const std::string& tensor,
                           const io::TensorChunk& chunk) const;

  std::string path_;
  io::CheckpointManifest manifest_;
  std::map<std::string, int> index_;                   // tensor name -> manifest_.tensors position
  std::map<std::string, io::ShardFile> file_records_;  // shard file name -> its record
  mutable std::mutex mutex_;                           // guards files_ and checked_
  mutable std::map<std::string, std::shared_ptr<io::SafetensorsFile>> files_;
  mutable std::set<std::pair<std::string, std::string>> checked_;  // (file, tensor) verified
};

// `dir` itself when it is a checkpoint (has manifest.pb); else "DIR/step-00000040", the newest
// checkpoint directory in `dir`. NotFound when there is none; DataLoss when the newest (or `dir`
// itself, a "step-N" directory) has no manifest, naming the newest complete one before it.
// Leftovers of interrupted saves ("step-N.tmp") never count.
absl::StatusOr<std::string> find_latest_checkpoint(const std::string& dir);

// The checkpoints that `path` names, newest first: `path` alone when it is a checkpoint
// directory, else every "step-N" directory in it, complete or not (a damaged newest one is met,
// never silently skipped).
std::vector<std::string> checkpoint_candidates(const std::string& path);

// The complete checkpoints ("step-N" with a manifest) directly in `dir`, oldest first.
std::vector<std::string> complete_checkpoints(const std::string& dir);

// Leftovers of saves interrupted by a crash ("step-N.tmp") directly in `dir`.
std::vector<std::string> leftover_checkpoints(const std::string& dir);
// Removes them (at the start of a run, before it saves); returns what it removed.
absl::StatusOr<std::vector<std::string>> remove_leftover_checkpoints(const std::string& dir);

// --keep-last: removes all but the newest `keep` complete checkpoints in `dir` (keep >= 1).
// Directories still being written (".tmp") are never touched.
absl::Status prune_checkpoints(const std::string& dir, int64_t keep);

struct LoadedCheckpoint {
  std::string path;
  io::CheckpointManifest manifest;
  std::map<std::string, Tensor> tensors;  // whole (global) f32 tensors by name
};

// Every tensor of a checkpoint, whole (for export and tools; training reads slices).
absl::StatusOr<LoadedCheckpoint> load_checkpoint(const std::string& path);

struct VerifyReport {
  std::string checkpoint;              // the directory verified (the newest complete one)
  std::vector<std::string> leftovers;  // "step-N.tmp" directories of interrupted saves
};

// Checks every shard file's presence, size and SHA-256 against the manifest (naming the
// damaged tensors by their own checksums), that the manifest is whole (read_manifest), and,
// when `path` holds several checkpoints, that no "step-N" directory lacks its manifest.
// The report, or a DataLoss error listing every problem.
absl::StatusOr<VerifyReport> verify_checkpoint(const std::string& path);

}  // namespace weft::train
