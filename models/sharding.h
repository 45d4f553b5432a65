// How the model's tensors are cut over the tensor-parallel group, and the conversions between a
// whole tensor and one rank's shard that loading, initialisation and gathering share.
#pragma once

#include "models/param.h"
#include "parallel/mesh.h"

namespace weft::models {

// Which block of a tp split this rank holds: block `index` of `parts` equal blocks; `replica`
// numbers the ranks that hold the same block (KV heads when tp exceeds them).
struct TpShard {
  int parts = 1;
  int index = 0;
  int replica = 0;
};

// The block of `whole` (the global tensor, f32/bf16/f16, e.g. a zero-copy view of a file) that
// `spec` names, converted to f32: a row range when split_dim is 0, copied column blocks
// otherwise. Only the block is copied.
[[nodiscard]] Tensor take_shard(const Tensor& whole, const ShardSpec& spec, const Shape& local);

// The whole tensor from this rank's shard `local` (a value or a gradient) described by `spec`,
// gathered over the spec's group ("tp", or "etp" for an expert). Replicated tensors come back
// as they are. Collective over the group when split.
[[nodiscard]] Tensor gather_whole(const Tensor& local, const ShardSpec& spec,
                                  const parallel::Mesh* mesh);

}  // namespace weft::models
