// How the model's tensors are cut over the tensor-parallel group, and the conversions between a
// whole tensor and one rank's shard that loading, initialisation and gathering share.
#pragma once

#include <cstdint>

#include "models/param.h"
#include "parallel/mesh.h"

namespace weft::models {

// Which block of a tp split this rank holds: block `index` of `parts` blocks; `replica` numbers
// the ranks that hold the same block (KV heads when tp exceeds them).
struct TpShard {
  int parts = 1;
  int index = 0;
  int replica = 0;
  // The vocabulary's split: `parts` need not divide the dimension (see shard_extent). Every
  // other split is even and refused by models::check_mesh_fits when it is not.
  bool padded = false;
};

// Where block `shard` of a dimension of `size` entries starts and how many entries it holds.
struct ShardExtent {
  int64_t offset = 0;
  int64_t length = 0;
};

// The one rule for cutting a dimension over tp. Even: `size / parts` entries each (parts must
// divide size). Padded (Megatron's vocabulary padding): the dimension is padded to a multiple of
// parts, block i spans [i * ceil(size/parts), (i+1) * ceil(size/parts)), and only its entries
// below `size` are held: the last blocks are shorter and the padding exists nowhere (no row, no
// logit, no gradient). A block that starts at or past `size` has length <= 0; the layout check
// refuses such meshes.
[[nodiscard]] ShardExtent shard_extent(int64_t size, const TpShard& shard);

// The block of `whole` (the global tensor, f32/bf16/f16, e.g. a zero-copy view of a file) that
// `spec` names, converted to f32: a row range when split_dim is 0, copied column blocks
// otherwise. `local` is the block's shape (shorter than the others for the last blocks of a
// padded split). Only the block is copied.
[[nodiscard]] Tensor take_shard(const Tensor& whole, const ShardSpec& spec, const Shape& local);

// The whole tensor from this rank's shard `local` (a value or a gradient) described by `spec`,
// gathered over the spec's group ("tp", or "etp" for an expert); blocks may differ in length (a
// padded split). Comes back in host memory (replicated
// tensors as they are). Collective over the group when split.
[[nodiscard]] Tensor gather_whole(const Tensor& local, const ShardSpec& spec,
                                  const parallel::Mesh* mesh);

}  // namespace weft::models
