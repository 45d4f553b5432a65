// weft-mpi-ranks: 2 3 4
// Bucketed gradient all-reduce: sums every tensor exactly as one all-reduce per tensor would,
// with one call per bucket and the all-reduce byte formula per call.
#include <gtest/gtest.h>

#include "comm/mpi_communicator.h"
#include "parallel/grad_sync.h"
#include "tests/support/test_util.h"

namespace weft::parallel {
namespace {

// Rank-dependent gradients of assorted shapes; entries are small integers so sums are exact.
std::vector<Tensor> make_grads(int rank) {
  std::vector<Tensor> grads;
  for (const Shape& shape : std::vector<Shape>{{7}, {3, 5}, {64}, {1}, {10, 10}, {2, 3, 4}}) {
    Tensor g = Tensor::empty(shape);
    for (int64_t i = 0; i < g.numel(); ++i) g.data<float>()[i] = float((i * 7 + rank * 3) % 11);
    grads.push_back(g);
  }
  return grads;
}

TEST(GradSync, BucketedSumEqualsElementwiseSumForAnyBucketSize) {
  auto world = comm::mpi_world_communicator("dp");
  const int p = world->size();
  for (size_t bucket_bytes : {size_t{1}, size_t{64}, size_t{400}, size_t{1} << 20}) {
    SCOPED_TRACE(bucket_bytes);
    std::vector<Tensor> grads = make_grads(world->rank());
    world->reset_stats();
    all_reduce_grads(*world, grads, bucket_bytes);
    int64_t total_bytes = 0;
    for (size_t t = 0; t < grads.size(); ++t) {
      total_bytes += grads[t].nbytes();
      std::vector<float> want(grads[t].numel(), 0.0f);
      for (int r = 0; r < p; ++r) {
        std::vector<float> part = make_grads(r)[t].to_floats();
        for (size_t i = 0; i < want.size(); ++i) want[i] += part[i];
      }
      EXPECT_EQ(grads[t].to_floats(), want) << "tensor " << t;
    }
    // Calls: one per bucket; bytes: 2(P-1)/P of each bucket, summed.
    const comm::CallStats s = world->stats()["all_reduce"];
    if (bucket_bytes == 1) {
      EXPECT_EQ(s.calls, static_cast<int64_t>(grads.size()));  // every tensor its own bucket
    }
    if (bucket_bytes == (size_t{1} << 20)) {
      EXPECT_EQ(s.calls, 1);
      EXPECT_EQ(s.bytes_sent, 2 * (p - 1) * total_bytes / p);
    }
    EXPECT_GE(s.calls, 1);
  }
}

TEST(GradSync, OneRankGroupSendsNothing) {
  auto world = comm::mpi_world_communicator("world");
  auto alone = world->split(world->rank(), 0, "dp");
  std::vector<Tensor> grads = make_grads(world->rank());
  const std::vector<float> before = grads[1].to_floats();
  all_reduce_grads(*alone, grads);
  EXPECT_EQ(grads[1].to_floats(), before);
  EXPECT_EQ(comm::total(alone->stats()).calls, 0);
}

}  // namespace
}  // namespace weft::parallel
