// TokenWeave's schedule (Gond et al., 2025; docs/serving.md "TokenWeave" for serving,
// docs/algorithms.md "TokenWeave in training"): the rows of a step run as lanes (two halves), one
// stage behind the other. A stage is a computation on each lane followed by a collective over the
// tp group, started on the communicator's own thread (comm/communicator.h), so one lane's
// collective is in flight while the other lane computes:
//
//   lane 0:  compute | collective | compute    | collective | ...
//   lane 1:          | compute    | collective | compute    | collective
//
// Between stages a lane's rows are this rank's block of them, [n/tp, D] of the lane's n rows,
// after a reduce-scatter, or all of them, [n, D], after an all-gather: a reduce-scatter followed
// by an all-gather moves the bytes of one all-reduce. n must be divisible by tp.
#pragma once

#include <functional>
#include <vector>

#include "comm/communicator.h"
#include "runtime/core/tensor.h"

namespace weft::parallel {

enum class WeaveCollective {
  kAllGather,      // [n/tp, D] -> [n, D]
  kReduceScatter,  // [n, D] partial sums over tp -> this rank's rows of the sum, [n/tp, D]
};

class TokenWeave {
 public:
  // The result of the lane's previous collective (undefined before the first) -> the tensor its
  // next collective takes.
  using Compute = std::function<Tensor(int lane, const Tensor& in)>;

  // lanes: 1 or 2. Under WEFT_BENCH_DROP_COMM (a bench-only switch) every collective is replaced
  // by a local copy: the same compute with wrong results, the floor that overlap approaches.
  TokenWeave(comm::Communicator& group, int lanes);
  ~TokenWeave();

  [[nodiscard]] int lanes() const { return static_cast<int>(lanes_.size()); }
  // For lane 0, then lane 1: waits for the lane's collective in flight, runs `compute` on its
  // result and starts `next` on what `compute` returns (kept alive until the collective is done).
  void stage(WeaveCollective next, const Compute& compute);
  // Waits for the lane's collective in flight; its result.
  [[nodiscard]] Tensor result(int lane);

 private:
  struct Lane {
    Tensor in, out;  // the collective's input and output
    comm::WorkPtr work;
  };
  void wait(Lane& lane);

  comm::Communicator& group_;
  std::vector<Lane> lanes_;
  bool drop_comm_;
};

}  // namespace weft::parallel
