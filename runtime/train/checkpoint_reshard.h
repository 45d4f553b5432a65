// Offline resharding: rewrites a checkpoint so that its shard files follow another mesh's
// split (one shard file per target rank that holds a distinct slice). Any checkpoint already
// loads under any mesh (CheckpointReader::read_slice); resharding makes each target rank's
// slices one file of their own, the layout a save on that mesh would have produced.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "parallel/mesh.h"

namespace weft::train {

// "tp=2,pp=1,dp=2" (keys dp, pp, tp, sp, ep, etp; each at most once; omitted ones are 1),
// checked as the training launcher checks them.
absl::StatusOr<parallel::ParallelDims> parse_mesh_spec(const std::string& spec);

// Reads the checkpoint `from` (a checkpoint or its parent) and writes the same step as
// `to`/step-N, with mesh `dims`. A tensor the source split along dim d over group g (recorded
// per tensor; optimizer moments follow their parameter) is cut along d into size(g) parts as
// models::shard_extent cuts the vocabulary (equal parts when size(g) divides the extent, else
// parts of ceil(extent / size(g)), the last shorter and an empty one not written), part k
// written by rank k of g on the pipeline stage holding the tensor's layer (pipeline_layout.h;
// embeddings on the first stage, the rest on the last); a replicated tensor is written whole by
// that stage's first rank.
// Returns the new checkpoint directory.
absl::StatusOr<std::string> reshard_checkpoint(const std::string& from, const std::string& to,
                                               const parallel::ParallelDims& dims);

}  // namespace weft::train
