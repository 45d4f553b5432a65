// The on-disk form of a weft checkpoint, shared by the writer (every rank writes its shard) and
// offline tools (reshard writes one shard per target rank):
//
//   CKPT/step-00000040/manifest.pb              CheckpointManifest (runtime/io/checkpoint.proto)
//   CKPT/step-00000040/shard-00003.safetensors  the chunks world rank 3 wrote
//
// A checkpoint is built in "step-N.tmp" and renamed when every shard and the manifest are
// complete, so the newest "step-N" with a manifest is always whole.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/mesh.h"
#include "runtime/core/tensor.h"
#include "runtime/io/checkpoint.pb.h"

namespace weft::train {

inline constexpr char kManifestFile[] = "manifest.pb";
// Format 3 adds SHA-256 checksums of every chunk, of every shard's header and of the manifest
// itself; format 2 (whole-file checksums only) is still read.
inline constexpr int kCheckpointFormat = 3;
inline constexpr int kOldestReadableFormat = 2;

// One tensor as a rank holds it: the box [offsets, offsets + value.shape) of a tensor of
// `global_shape`, and how the training mesh splits it (models::ShardSpec) for resharding.
struct CheckpointTensor {
  std::string name;
  Tensor value;
  Shape global_shape;
  std::vector<int64_t> offsets;  // empty = the whole tensor (all zeros)
  int split_dim = -1;            // -1: replicated
  std::string group;             // "tp", "ep", ... ("" when replicated)
};

// The manifest's record of the mesh a checkpoint is laid out for.
io::MeshRecord mesh_record(const parallel::ParallelDims& dims);

std::string step_dir_name(int64_t step);  // "step-00000040"
std::string shard_file_name(int rank);    // "shard-00003.safetensors"
// True for optimizer-state entries ("<name>.exp_avg", "<name>.exp_avg_sq").
bool is_optimizer_state(const std::string& name);

// Removes a stale `tmp_dir` and creates it empty (with its parents).
absl::Status prepare_tmp_dir(const std::string& tmp_dir);
// Writes `tensors` (CPU, f32 or any float dtype) as `dir`/shard_file_name(rank) and returns a
// manifest holding only this shard's entries (one chunk each, with the SHA-256 of its bytes) and
// its file with size, SHA-256 and header SHA-256 (all from one pass over the written file).
// Errors name the tensor whose box does not fit its global shape or a repeated name.
absl::StatusOr<io::CheckpointManifest> write_shard(const std::string& dir, int rank,
                                                   const std::vector<CheckpointTensor>& tensors);
// `header` (step, mesh, ...) plus every part's files and tensors, one entry per name with all
// its chunks in part order. Errors when parts disagree on a tensor's global shape or split,
// when chunks overlap or do not cover their tensor.
absl::StatusOr<io::CheckpointManifest> merge_parts(
    io::CheckpointManifest header, const std::vector<io::CheckpointManifest>& parts);
// Seals `manifest` (format version and manifest checksum), writes it as manifest.pb into
// `tmp_dir` and renames `tmp_dir` to `final_dir` (replacing an older one).
absl::Status commit_checkpoint(const std::string& tmp_dir, const std::string& final_dir,
                               io::CheckpointManifest manifest);
// The manifest of a checkpoint directory, refused (DataLoss naming the file) when it is empty,
// unparsable, truncated (its checksum missing or wrong), of an unknown format, or incomplete:
// no files, no tensors, no model config, a chunk in an unlisted file or chunks that do not tile
// their tensor.
absl::StatusOr<io::CheckpointManifest> read_manifest(const std::string& checkpoint_dir);
// SHA-256 of `manifest` serialized deterministically with manifest_sha256 cleared.
std::string manifest_digest(io::CheckpointManifest manifest);

}  // namespace weft::train
