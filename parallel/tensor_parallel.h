// Megatron's conjugate collectives over a tensor-parallel group (docs/algorithms.md "Tensor
// parallelism"). A tp region is entered before column-parallel layers and left after
// row-parallel ones:
//
//                       forward                      backward
//   enter  (f)   identity        | all-gather     all-reduce     | reduce-scatter
//   leave  (g)   all-reduce      | reduce-scatter identity       | all-gather
//                (plain tp)        (sequence par.)
//
// Under sequence parallelism the activations outside the region are the group rank's block of
// rows: [n/tp, D] out of [n, D] (rows r*n/tp .. (r+1)*n/tp - 1), so n must be divisible by tp.
// A region over no group (or a group of one rank) is the identity in every direction.
#pragma once

#include "comm/communicator.h"
#include "runtime/core/tensor.h"

namespace weft::parallel {

class TensorParallelRegion {
 public:
  TensorParallelRegion() = default;
  TensorParallelRegion(comm::Communicator* group, bool sequence_parallel);

  [[nodiscard]] int size() const { return group_ != nullptr ? group_->size() : 1; }
  [[nodiscard]] bool sequence_parallel() const { return sequence_parallel_ && size() > 1; }
  // The same group without sequence parallelism (incremental decoding runs plain tp).
  [[nodiscard]] TensorParallelRegion without_sequence_parallel() const { return {group_, false}; }

  // Rows of [n, D] this rank holds outside the region: n, or n/tp under sequence parallelism.
  [[nodiscard]] int64_t local_rows(int64_t rows) const;

  // [n, D], the same on every rank -> this rank's rows [n_local, D] (a view): its block under
  // sequence parallelism, else all of them.
  [[nodiscard]] Tensor own_rows(const Tensor& x) const;

  // x [n_local, D] -> [n, D].
  [[nodiscard]] Tensor enter(const Tensor& x) const;
  // Partial dx [n, D] (this rank's column shard's contribution) -> whole dx [n_local, D].
  [[nodiscard]] Tensor enter_backward(Tensor dx) const;
  // Partial y [n, D] (a row-parallel layer's output) -> whole y [n_local, D].
  [[nodiscard]] Tensor leave(Tensor y) const;
  // dy [n_local, D] -> [n, D].
  [[nodiscard]] Tensor leave_backward(const Tensor& dy) const;

 private:
  [[nodiscard]] Tensor all_gather_rows(const Tensor& x) const;      // [n/tp, D] -> [n, D]
  [[nodiscard]] Tensor reduce_scatter_rows(const Tensor& x) const;  // [n, D] -> [n/tp, D]

  comm::Communicator* group_ = nullptr;
  bool sequence_parallel_ = false;
};

}  // namespace weft::parallel
