#include "parallel/token_weave.h"

#include <cstdlib>

#include "runtime/core/check.h"

namespace weft::parallel {

namespace {

// WEFT_BENCH_DROP_COMM, read once: a TokenWeave is made for every serving step and micro-batch.
bool bench_drops_comm() {
  static const bool drop = std::getenv("WEFT_BENCH_DROP_COMM") != nullptr;
  return drop;
}

}  // namespace

TokenWeave::TokenWeave(comm::Communicator& group, int lanes)
    : group_(group), lanes_(lanes), drop_comm_(bench_drops_comm()) {
  WEFT_CHECK(lanes == 1 || lanes == 2) << "TokenWeave runs 1 or 2 lanes, got " << lanes;
}

TokenWeave::~TokenWeave() {
  for (Lane& lane : lanes_) wait(lane);  // no collective may outlive its buffers
}

void TokenWeave::wait(Lane& lane) {
  if (lane.work) lane.work->wait();
  lane.work.reset();
  lane.in = Tensor();
}

void TokenWeave::stage(WeaveCollective next, const Compute& compute) {
  const int p = group_.size(), rank = group_.rank();
  for (int i = 0; i < lanes(); ++i) {
    Lane& lane = lanes_[i];
    wait(lane);
    lane.in = compute(i, lane.out);
    Shape shape = lane.in.shape();
    WEFT_CHECK_EQ(shape[0] % (next == WeaveCollective::kReduceScatter ? p : 1), 0)
        << "a reduce-scatter needs rows divisible by tp " << p << ", got " << lane.in.str();
    shape[0] = next == WeaveCollective::kAllGather ? shape[0] * p : shape[0] / p;
    lane.out = Tensor::empty(shape, lane.in.dtype(), lane.in.device());
    if (next == WeaveCollective::kAllGather) {
      if (!drop_comm_) {
        lane.work = group_.all_gather_async(lane.in, lane.out);
        continue;
      }
      const int64_t n = lane.in.dim(0);
      for (int r = 0; r < p; ++r) lane.out.slice(r * n, (r + 1) * n).copy_from(lane.in);
    } else {
      if (!drop_comm_) {
        lane.work = group_.reduce_scatter_async(lane.in, lane.out, comm::ReduceOp::kSum);
        continue;
      }
      const int64_t n = lane.out.dim(0);
      lane.out.copy_from(lane.in.slice(rank * n, (rank + 1) * n));
    }
  }
}

Tensor TokenWeave::result(int lane) {
  wait(lanes_[lane]);
  return lanes_[lane].out;
}

}  // namespace weft::parallel
