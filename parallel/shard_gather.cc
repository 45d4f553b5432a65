#include "parallel/shard_gather.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "runtime/core/check.h"

namespace weft::parallel {

Tensor gather_shards(comm::Communicator& group, const Tensor& shard, int split_dim, int64_t offset,
                     const Shape& global_shape) {
  const Tensor local = shard.host();  // the blocks travel and are assembled on the host
  WEFT_CHECK(split_dim >= 0 && split_dim < local.ndim()) << "split_dim " << split_dim;
  const int p = group.size();
  // Every rank's [offset, length] along split_dim: the blocks travel padded to the longest.
  Tensor extents = Tensor::empty({2 * p}, DType::kI64, Device::cpu());  // [P * 2]
  group.all_gather(Tensor::from_ints({offset, local.dim(split_dim)}, {2}), extents);
  const std::vector<int64_t> ext = extents.to_ints();
  int64_t longest = 0;
  for (int r = 0; r < p; ++r) longest = std::max(longest, ext[2 * r + 1]);

  // As [outer, len, inner]: the block of rank r fills rows [start_r, start_r + n_r).
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < split_dim; ++i) outer *= global_shape[i];
  for (size_t i = split_dim + 1; i < global_shape.size(); ++i) inner *= global_shape[i];
  WEFT_CHECK_EQ(local.numel(), outer * local.dim(split_dim) * inner)
      << "block " << local.str() << " disagrees with the global shape off split_dim";
  const int64_t len = global_shape[split_dim], n = local.dim(split_dim);
  const size_t elem = dtype_size(local.dtype());
  const size_t row_bytes = static_cast<size_t>(inner) * elem;
  Tensor mine = local;  // [outer, longest, inner]: a copy only when this block is shorter
  if (n < longest) {
    Shape padded = local.shape();
    padded[split_dim] = longest;
    mine = Tensor::zeros(padded, local.dtype(), Device::cpu());
    for (int64_t o = 0; o < outer; ++o) {
      std::memcpy(static_cast<char*>(mine.raw()) + o * longest * row_bytes,
                  static_cast<const char*>(local.raw()) + o * n * row_bytes, n * row_bytes);
    }
  }
  // [P, outer, longest, inner]
  Tensor blocks = Tensor::empty({p * mine.numel()}, local.dtype(), Device::cpu());
  group.all_gather(mine.view({mine.numel()}), blocks);

  Tensor whole = Tensor::empty(global_shape, local.dtype(), Device::cpu());
  auto* dst = static_cast<char*>(whole.raw());
  const auto* src = static_cast<const char*>(blocks.raw());
  for (int r = 0; r < p; ++r) {
    const int64_t start = ext[2 * r], rows = ext[2 * r + 1];
    WEFT_CHECK(start >= 0 && start + rows <= len)
        << "the block of rank " << r << " ([" << start << ", " << start + rows
        << ")) runs past the global length " << len;
    for (int64_t o = 0; o < outer; ++o) {
      std::memcpy(dst + (o * len + start) * row_bytes,
                  src + ((static_cast<int64_t>(r) * outer + o) * longest) * row_bytes,
                  rows * row_bytes);
    }
  }
  return whole;
}

}  // namespace weft::parallel
