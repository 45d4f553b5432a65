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
// `to`/step-N, with mesh `dims`, in the layout and with the split records a save on that mesh
// writes. The dense weights the config names are cut as the model holds them on the target mesh
// (models::hf_weight_shapes, whatever mesh the source was saved on): along their dimension into
// tp parts as models::shard_extent cuts the vocabulary (equal parts when tp divides the extent,
// else parts of ceil(extent / tp), the last shorter and an empty one not written), KV
// projections into min(tp, Hkv) head blocks, part k written by the first tp rank holding it, on
// the pipeline stage holding the tensor's layer (pipeline_layout.h; embeddings on the first
// stage, the rest on the last). Expert weights (and names the config does not list) follow the
// split their source records, over the target's group. Optimizer moments follow their
// parameter. A tensor the target does not split (norms, the router, everything at tp 1) is
// written whole, recorded as replicated, by that stage's first rank.
// Returns the new checkpoint directory.
absl::StatusOr<std::string> reshard_checkpoint(const std::string& from, const std::string& to,
                                               const parallel::ParallelDims& dims);

}  // namespace weft::train
