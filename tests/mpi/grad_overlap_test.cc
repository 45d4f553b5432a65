// weft-mpi-ranks: 2 3 4
// The overlapped, bucketed gradient all-reduce (parallel::GradReducer): it sums exactly as
// all_reduce_grads does for any bucket size, reduces grads whose ready hook never fired, moves
// 2(P-1)/P of the grad bytes, and starts (and, on the MPI comm thread, completes) its first
// bucket while the backward is still computing.
#include <gtest/gtest.h>

#include <chrono>
#include <vector>

#include "comm/mpi_communicator.h"
#include "kernels/ops.h"
#include "parallel/grad_sync.h"
#include "tests/support/test_util.h"

namespace weft::parallel {
namespace {

const std::vector<Shape> kShapes = {{7}, {3, 5}, {64}, {1, 9}, {10, 10}, {2, 3, 4}, {33}};

// Rank-dependent grads; small integers, so sums in any order are exact.
std::vector<Tensor> make_grads(int rank, int step) {
  std::vector<Tensor> grads;
  for (const Shape& shape : kShapes) {
    Tensor g = Tensor::empty(shape);
    for (int64_t i = 0; i < g.numel(); ++i) {
      g.data<float>()[i] = static_cast<float>((i * 7 + rank * 3 + step * 5) % 11);
    }
    grads.push_back(g);
  }
  return grads;
}

std::vector<Tensor> clones(const std::vector<Tensor>& ts) {
  std::vector<Tensor> out;
  for (const Tensor& t : ts) out.push_back(t.clone());
  return out;
}

// Fills `into` with `from` (same shapes).
void assign(const std::vector<Tensor>& into, const std::vector<Tensor>& from) {
  for (size_t i = 0; i < into.size(); ++i) Tensor(into[i]).copy_from(from[i]);
}

int64_t total_bytes(const std::vector<Tensor>& ts) {
  int64_t n = 0;
  for (const Tensor& t : ts) n += static_cast<int64_t>(t.nbytes());
  return n;
}

TEST(GradOverlap, OverlappedSumEqualsAllReduceGradsForAnyBucketSize) {
  auto world = comm::mpi_world_communicator("dp");
  for (size_t bucket_bytes : {size_t{1}, size_t{64}, size_t{400}, size_t{1} << 20}) {
    SCOPED_TRACE(bucket_bytes);
    std::vector<Tensor> grads = clones(make_grads(world->rank(), 0));
    GradReducer reducer(*world, grads, {.bucket_bytes = bucket_bytes});
    // Two steps through the same reducer: its per-step state must reset.
    for (int step = 0; step < 2; ++step) {
      assign(grads, make_grads(world->rank(), step));
      std::vector<Tensor> want = clones(grads);
      all_reduce_grads(*world, want, bucket_bytes);
      for (size_t i = grads.size(); i-- > 0;) reducer.grad_ready(i);
      reducer.finish();
      for (size_t i = 0; i < grads.size(); ++i) {
        EXPECT_EQ(grads[i].to_floats(), want[i].to_floats()) << "step " << step << " grad " << i;
      }
    }
  }
}

TEST(GradOverlap, GradsWhoseHookNeverFiresAreStillReduced) {
  auto world = comm::mpi_world_communicator("dp");
  std::vector<Tensor> grads = clones(make_grads(world->rank(), 0));
  std::vector<Tensor> want = clones(grads);
  all_reduce_grads(*world, want);
  GradReducer reducer(*world, grads, {.bucket_bytes = 100});
  // Hooks for every other grad only (e.g. experts no token was routed to).
  for (size_t i = grads.size(); i-- > 0;) {
    if (i % 2 == 0) reducer.grad_ready(i);
  }
  reducer.finish();
  for (size_t i = 0; i < grads.size(); ++i) {
    EXPECT_EQ(grads[i].to_floats(), want[i].to_floats()) << "grad " << i;
  }
}

TEST(GradOverlap, AllReduceBytesAreTwoTimesPMinusOneOverPOfTheGrads) {
  auto world = comm::mpi_world_communicator("dp");
  const int64_t p = world->size();
  std::vector<Tensor> grads = clones(make_grads(world->rank(), 0));
  for (size_t bucket_bytes : {size_t{1}, size_t{256}, size_t{1} << 20}) {
    SCOPED_TRACE(bucket_bytes);
    GradReducer reducer(*world, grads, {.bucket_bytes = bucket_bytes});
    world->reset_stats();
    for (size_t i = grads.size(); i-- > 0;) reducer.grad_ready(i);
    reducer.finish();
    int64_t want = 0;  // per bucket, as the counters round
    for (size_t b = 0; b < reducer.num_buckets(); ++b) {
      int64_t bytes = 0;
      for (size_t i : reducer.bucket_members(b)) bytes += grads[i].nbytes();
      want += 2 * (p - 1) * bytes / p;
    }
    const comm::CallStats s = world->stats()["all_reduce"];
    EXPECT_EQ(s.calls, static_cast<int64_t>(reducer.num_buckets()));
    EXPECT_EQ(s.bytes_sent, want);
    if (bucket_bytes == (size_t{1} << 20)) {
      EXPECT_EQ(s.bytes_sent, 2 * (p - 1) * total_bytes(grads) / p);  // one bucket
    }
    if (bucket_bytes == 1) {
      EXPECT_EQ(reducer.num_buckets(), grads.size());
    }
  }
}

TEST(GradOverlap, BucketsFollowReverseParameterOrder) {
  auto world = comm::mpi_world_communicator("dp");
  std::vector<Tensor> grads = clones(make_grads(world->rank(), 0));
  GradReducer reducer(*world, grads, {.bucket_bytes = 200});
  std::vector<size_t> order;
  for (size_t b = 0; b < reducer.num_buckets(); ++b) {
    for (size_t i : reducer.bucket_members(b)) order.push_back(i);
  }
  std::vector<size_t> want;
  for (size_t i = grads.size(); i-- > 0;) want.push_back(i);
  EXPECT_EQ(order, want);
  EXPECT_GT(reducer.num_buckets(), 1u);
  reducer.finish();
}

// Nanoseconds from `a` to `b`.
int64_t ns_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
}

// A stand-in for one layer's backward: a few GEMMs (milliseconds of real compute).
void layer_compute(const Tensor& a, const Tensor& b, Tensor& c) {
  for (int k = 0; k < 4; ++k) kernels::gemm(a, false, b, false, c);
}

// The proof of overlap. A fake backward over `layers` weights, last layer first, computes
// between grad-ready events; one bucket per weight. Before the last event, the first bucket's
// all-reduce must already have been issued (traffic counters) and completed (its Work polled
// done while the backward was still computing), and finish() must not have issued it. If the
// reducer only communicated in finish(), the wait below would time out and the test fail.
TEST(GradOverlap, FirstBucketCompletesBeforeBackwardEnds) {
  auto world = comm::mpi_world_communicator("dp");
  const int layers = 6;
  std::vector<Tensor> grads;
  for (int l = 0; l < layers; ++l) grads.push_back(Tensor::zeros({32, 32}));
  GradReducer reducer(*world, grads, {.bucket_bytes = 32 * 32 * sizeof(float)});
  ASSERT_EQ(reducer.num_buckets(), static_cast<size_t>(layers));

  const Tensor a = testing::random_tensor({192, 192}, 1);
  const Tensor b = testing::random_tensor({192, 192}, 2);
  Tensor c = Tensor::zeros({192, 192});
  world->reset_stats();
  Clock::time_point last_event;
  int64_t calls_before_last_event = 0;
  for (int l = layers - 1; l >= 0; --l) {
    layer_compute(a, b, c);
    if (l == 0) {
      // The last layer keeps computing while the first bucket (issued layers ago) travels.
      const auto deadline = Clock::now() + std::chrono::seconds(30);
      while (!reducer.bucket_done(0) && Clock::now() < deadline) layer_compute(a, b, c);
      calls_before_last_event = world->stats()["all_reduce"].calls;
      last_event = Clock::now();
    }
    kernels::fill_(grads[l], static_cast<float>(world->rank() + l));
    reducer.grad_ready(l);
  }
  reducer.finish();

  EXPECT_EQ(calls_before_last_event, layers - 1);  // every bucket but the last already issued
  const BucketTrace& first = reducer.trace(0);
  ASSERT_TRUE(first.issued);
  EXPECT_FALSE(first.issued_by_finish);
  EXPECT_GT(ns_between(first.issued_at, last_event), 0);
  ASSERT_TRUE(first.seen_done);
  EXPECT_GE(ns_between(first.seen_done_at, last_event), 0);
  const int p = world->size();
  for (int l = 0; l < layers; ++l) {
    const float want = static_cast<float>(p * (p - 1) / 2 + p * l);
    EXPECT_EQ(grads[l].to_floats(), std::vector<float>(32 * 32, want)) << "layer " << l;
  }
}

TEST(GradOverlap, OneRankGroupSendsNothing) {
  auto world = comm::mpi_world_communicator("world");
  auto alone = world->split(world->rank(), 0, "dp");
  std::vector<Tensor> grads = clones(make_grads(world->rank(), 0));
  const std::vector<float> before = grads[1].to_floats();
  GradReducer reducer(*alone, grads, {.bucket_bytes = 1, .shard_rows = true});
  for (size_t i = grads.size(); i-- > 0;) reducer.grad_ready(i);
  reducer.finish();
  EXPECT_EQ(grads[1].to_floats(), before);
  EXPECT_EQ(reducer.own_rows(1).size(), grads[1].dim(0));
  EXPECT_EQ(comm::total(alone->stats()).calls, 0);
}

}  // namespace
}  // namespace weft::parallel
