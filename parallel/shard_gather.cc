#include "parallel/shard_gather.h"

#include <cstring>
#include <vector>

#include "runtime/core/check.h"

namespace weft::parallel {

Tensor gather_shards(comm::Communicator& group, const Tensor& local, int split_dim, int64_t offset,
                     const Shape& global_shape) {
  WEFT_CHECK(local.is_cpu()) << "gather_shards needs CPU tensors, got " << local.str();
  WEFT_CHECK(split_dim >= 0 && split_dim < local.ndim()) << "split_dim " << split_dim;
  const int p = group.size();
  Tensor blocks = Tensor::empty({p * local.numel()}, local.dtype());  // [P * local numel]
  group.all_gather(local.view({local.numel()}), blocks);
  Tensor offsets = Tensor::empty({p}, DType::kI64);  // [P] where each rank's block starts
  group.all_gather(Tensor::from_ints({offset}, {1}), offsets);
  const std::vector<int64_t> starts = offsets.to_ints();

  // As [outer, len, inner]: the block of rank r fills rows [starts[r], starts[r] + n).
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < split_dim; ++i) outer *= global_shape[i];
  for (size_t i = split_dim + 1; i < global_shape.size(); ++i) inner *= global_shape[i];
  const int64_t len = global_shape[split_dim], n = local.dim(split_dim);
  const size_t row_bytes = static_cast<size_t>(n * inner) * dtype_size(local.dtype());
  const size_t elem = dtype_size(local.dtype());
  Tensor whole = Tensor::empty(global_shape, local.dtype());
  auto* dst = static_cast<char*>(whole.raw());
  const auto* src = static_cast<const char*>(blocks.raw());
  for (int r = 0; r < p; ++r) {
    WEFT_CHECK_LE(starts[r] + n, len) << "shard of rank " << r << " runs past the global shape";
    for (int64_t o = 0; o < outer; ++o) {
      std::memcpy(dst + ((o * len + starts[r]) * inner) * elem,
                  src + static_cast<size_t>(r * local.numel()) * elem + o * row_bytes, row_bytes);
    }
  }
  return whole;
}

}  // namespace weft::parallel
