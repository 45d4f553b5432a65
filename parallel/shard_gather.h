// Gathering a sharded tensor to its whole global shape over the group it is split across: for
// checkpoint export, `weft eval --grads`, the serving logits and tests. Each rank passes its
// block and where it starts along `split_dim`; ranks holding the same block (replicas) are
// allowed, the result is the same. Needs a whole-tensor buffer on every rank: not for the
// training step.
#pragma once

#include <cstdint>

#include "comm/communicator.h"
#include "runtime/core/tensor.h"

namespace weft::parallel {

// local: this rank's block (CPU), which covers [offset, offset + local.dim(split_dim)) of
// `global_shape` along split_dim; blocks agree on every other dimension but may differ in
// length along split_dim (the vocabulary's last blocks are shorter when tp does not divide it,
// models::shard_extent). Returns the whole tensor, in host memory, on every rank of the group.
// Collective over `group`.
[[nodiscard]] Tensor gather_shards(comm::Communicator& group, const Tensor& local, int split_dim,
                                   int64_t offset, const Shape& global_shape);

}  // namespace weft::parallel
