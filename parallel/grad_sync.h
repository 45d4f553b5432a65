// Gradient reduction over a data-parallel group.
#pragma once

#include <cstddef>
#include <vector>

#include "comm/communicator.h"
#include "runtime/core/tensor.h"

namespace weft::parallel {

// Sums `grads` (f32, same device) over `group` in place. Tensors are packed into flat buckets of
// at most `bucket_bytes` (a tensor larger than that gets a bucket of its own) so many small
// tensors cost few calls; every bucket is issued asynchronously before the first is waited on.
// No communication when the group has one rank.
void all_reduce_grads(comm::Communicator& group, const std::vector<Tensor>& grads,
                      size_t bucket_bytes = size_t{25} << 20);

}  // namespace weft::parallel
