// Reading a weft checkpoint under any mesh: every tensor is stored as chunks (boxes of the
// global tensor, runtime/train/checkpoint_chunks.h); read_slice() assembles any box from the
// chunks that intersect it, so a run saved at tp2 x pp2 resumes at pp4 or dp2 by asking each
// parameter's own slice.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/core/tensor.h"
#include "runtime/io/checkpoint.pb.h"
#include "runtime/io/safetensors.h"

namespace weft::train {

class CheckpointReader {
 public:
  // A checkpoint directory, or a parent holding several (the newest complete one is read).
  // Reads and checks the manifest (every chunk inside its tensor, no two overlapping); shard
  // files are opened (mapped) only when a read needs them.
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
  absl::StatusOr<std::shared_ptr<io::SafetensorsFile>> file(const std::string& name) const;

  std::string path_;
  io::CheckpointManifest manifest_;
  std::map<std::string, int> index_;  // tensor name -> manifest_.tensors position
  mutable std::mutex mutex_;          // guards files_
  mutable std::map<std::string, std::shared_ptr<io::SafetensorsFile>> files_;
};

// "DIR/step-00000040" for the newest complete checkpoint in `dir`; `dir` itself when it is a
// checkpoint (has manifest.pb). NotFound when there is none. ".tmp" directories never count.
absl::StatusOr<std::string> find_latest_checkpoint(const std::string& dir);

// The complete checkpoints ("step-N" with a manifest) directly in `dir`, oldest first.
std::vector<std::string> complete_checkpoints(const std::string& dir);

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

// Checks every shard file's presence, size and SHA-256 against the manifest, that every chunk
// names a listed file, and that the chunks of every tensor tile it (inside, disjoint, complete).
// OK, or a DataLoss error listing every problem.
absl::Status verify_checkpoint(const std::string& path);

}  // namespace weft::train
