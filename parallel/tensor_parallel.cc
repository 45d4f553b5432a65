#include "parallel/tensor_parallel.h"

#include <utility>

#include "runtime/core/check.h"

namespace weft::parallel {

TensorParallelRegion::TensorParallelRegion(comm::Communicator* group, bool sequence_parallel)
    : group_(group), sequence_parallel_(sequence_parallel) {}

int64_t TensorParallelRegion::local_rows(int64_t rows) const {
  if (!sequence_parallel()) return rows;
  WEFT_CHECK_EQ(rows % size(), 0) << "sequence parallelism needs rows divisible by tp";
  return rows / size();
}

Tensor TensorParallelRegion::own_rows(const Tensor& x) const {
  if (!sequence_parallel()) return x;
  const int64_t n = local_rows(x.dim(0));
  return x.slice(group_->rank() * n, (group_->rank() + 1) * n);
}

Tensor TensorParallelRegion::all_gather_rows(const Tensor& x) const {
  Shape shape = x.shape();
  shape[0] *= size();
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());  // [n, D]
  group_->all_gather(x, out);
  return out;
}

Tensor TensorParallelRegion::reduce_scatter_rows(const Tensor& x) const {
  Shape shape = x.shape();
  WEFT_CHECK_EQ(shape[0] % size(), 0) << "reduce-scatter needs rows divisible by tp";
  shape[0] /= size();
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());  // [n/tp, D]
  group_->reduce_scatter(x, out);
  return out;
}

Tensor TensorParallelRegion::enter(const Tensor& x) const {
  return sequence_parallel() ? all_gather_rows(x) : x;
}

Tensor TensorParallelRegion::enter_backward(Tensor dx) const {
  if (size() == 1) return dx;
  if (sequence_parallel()) return reduce_scatter_rows(dx);
  group_->all_reduce(dx);
  return dx;
}

Tensor TensorParallelRegion::leave(Tensor y) const { return enter_backward(std::move(y)); }

Tensor TensorParallelRegion::leave_backward(const Tensor& dy) const { return enter(dy); }

}  // namespace weft::parallel
