#include "models/sharding.h"

#include <algorithm>

#include "parallel/shard_gather.h"
#include "runtime/core/check.h"

namespace weft::models {

ShardExtent shard_extent(int64_t size, const TpShard& shard) {
  if (!shard.padded) {
    WEFT_CHECK_EQ(size % shard.parts, 0) << "a dimension of " << size << " entries does not split "
                                         << "evenly into " << shard.parts << " blocks";
    const int64_t length = size / shard.parts;
    return {shard.index * length, length};
  }
  const int64_t stride = (size + shard.parts - 1) / shard.parts;  // ceil(size / parts)
  const int64_t offset = shard.index * stride;
  return {offset, std::min(stride, size - offset)};
}

Tensor take_shard(const Tensor& whole, const ShardSpec& spec, const Shape& local) {
  if (spec.split_dim < 0) return whole.to_dtype(DType::kF32).on(default_device());
  const int dim = spec.split_dim;
  const int64_t n = local[dim];
  if (dim == 0) {
    return whole.slice(spec.offset, spec.offset + n).to_dtype(DType::kF32).on(default_device());
  }
  // As [outer, len, inner]: rows o*len + offset .. + n of [outer*len, inner] are block o.
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < dim; ++i) outer *= whole.dim(i);
  for (int i = dim + 1; i < whole.ndim(); ++i) inner *= whole.dim(i);
  const int64_t len = whole.dim(dim);
  const Tensor rows = whole.view({outer * len, inner});
  Tensor out = Tensor::empty(local);  // f32
  Tensor out_rows = out.view({outer * n, inner});
  for (int64_t o = 0; o < outer; ++o) {
    const int64_t first = o * len + spec.offset;
    out_rows.slice(o * n, (o + 1) * n)
        .copy_from(rows.slice(first, first + n).to_dtype(DType::kF32));
  }
  return out;
}

Tensor gather_whole(const Tensor& local, const ShardSpec& spec, const parallel::Mesh* mesh) {
  if (spec.split_dim < 0 || local.shape() == spec.global_shape) return local.host();
  WEFT_CHECK(mesh != nullptr) << "a sharded tensor needs its mesh to be gathered";
  WEFT_CHECK(spec.group == "tp" || spec.group == "etp")
      << "gather_whole knows the tp and etp groups only, got " << spec.group;
  return parallel::gather_shards(spec.group == "tp" ? mesh->tp() : mesh->etp(), local,
                                 spec.split_dim, spec.offset, spec.global_shape);
}

}  // namespace weft::models
