// The NCCL communicator on one GPU: a one-rank group, where every collective is an identity or a
// copy, the traffic counters follow communicator.h's formulas with P = 1, and the comm stream
// is ordered after the compute stream (inputs) and before it (results after wait()).
#include "comm/nccl/nccl_communicator.h"

#include <mpi.h>

#include <memory>
#include <vector>

#include "comm/mpi_runtime.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_test_util.h"

namespace weft::comm {
namespace {

using testing::gpu_empty;
using testing::on_gpu;
using testing::random_in;
using testing::tensors_close;

// MPI for the whole binary (a singleton MPI when run without mpirun), only where a GPU exists.
class MpiEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    if (cuda_device_count() > 0) runtime_ = std::make_unique<MpiRuntime>(nullptr, nullptr);
  }
  void TearDown() override { runtime_.reset(); }

 private:
  std::unique_ptr<MpiRuntime> runtime_;
};

[[maybe_unused]] ::testing::Environment* const kMpiEnvironment =
    ::testing::AddGlobalTestEnvironment(new MpiEnvironment);

class NcclOneRank : public testing::GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    int world = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (world != 1) GTEST_SKIP() << "a one-rank test, run with " << world << " ranks";
    comm_ = make_nccl_communicator(MPI_COMM_WORLD, 0, "world");
  }

  std::unique_ptr<Communicator> comm_;
};

TEST_F(NcclOneRank, ReportsRankSizeAndName) {
  EXPECT_EQ(comm_->rank(), 0);
  EXPECT_EQ(comm_->size(), 1);
  EXPECT_EQ(comm_->name(), "world");
}

TEST_F(NcclOneRank, ReductionsAreIdentitiesForEveryDtype) {
  const Tensor values = random_in({5, 7}, 1, DType::kF32);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
      Tensor t = on_gpu(values, dtype);
      comm_->all_reduce(t, op);
      EXPECT_TRUE(tensors_close(t, testing::rounded(values, dtype), 0.0));
      Tensor out = gpu_empty({5, 7}, dtype);
      comm_->reduce_scatter(on_gpu(values, dtype), out, op);
      EXPECT_TRUE(tensors_close(out, testing::rounded(values, dtype), 0.0));
    }
  }
  const Tensor ids = Tensor::from_ints({3, -4, 1LL << 40}, {3});
  Tensor gids = on_gpu(ids);
  comm_->all_reduce(gids, ReduceOp::kSum);
  EXPECT_EQ(gids.to_ints(), ids.to_ints());
}

TEST_F(NcclOneRank, GathersAllToAllsAndBroadcastCopy) {
  const Tensor values = random_in({6, 3}, 2, DType::kF32);
  const Tensor in = on_gpu(values);
  Tensor gathered = gpu_empty({6, 3}, DType::kF32);
  comm_->all_gather(in, gathered);
  EXPECT_TRUE(tensors_close(gathered, values, 0.0));
  Tensor exchanged = gpu_empty({6, 3}, DType::kF32);
  comm_->all_to_all(in, exchanged);
  EXPECT_TRUE(tensors_close(exchanged, values, 0.0));
  Tensor uneven = gpu_empty({6, 3}, DType::kF32);
  comm_->all_to_all_v(in, {6}, uneven, {6});
  EXPECT_TRUE(tensors_close(uneven, values, 0.0));
  Tensor b = on_gpu(values);
  comm_->broadcast(b, 0);
  EXPECT_TRUE(tensors_close(b, values, 0.0));
  const Tensor bytes = Tensor::from_ints({1, 2, 3, 4}, {4});
  Tensor gathered_ids = gpu_empty({4}, DType::kI64);
  comm_->all_gather(on_gpu(bytes), gathered_ids);
  EXPECT_EQ(gathered_ids.to_ints(), bytes.to_ints());
  comm_->barrier();
}

TEST_F(NcclOneRank, CountersFollowTheFormulasWithOneRank) {
  Tensor t = gpu_empty({8, 4}, DType::kF32);  // 128 bytes
  kernels::fill_(t, 1.0f);
  Tensor out = gpu_empty({8, 4}, DType::kF32);
  comm_->reset_stats();
  comm_->all_reduce(t);
  comm_->all_gather(t, out);
  comm_->reduce_scatter(t, out);
  comm_->all_to_all(t, out);
  comm_->all_to_all_v(t, {8}, out, {8});
  comm_->broadcast(t, 0);
  comm_->barrier();
  const std::map<std::string, CallStats> stats = comm_->stats();
  for (const char* kind : {"all_reduce", "all_gather", "reduce_scatter", "all_to_all",
                           "all_to_all_v", "broadcast", "barrier"}) {
    SCOPED_TRACE(kind);
    ASSERT_EQ(stats.count(kind), 1u);
    EXPECT_EQ(stats.at(kind).calls, 1);
  }
  // (P-1)/P and 2(P-1)/P vanish at P = 1; rows sent to other ranks: none; broadcast: S.
  EXPECT_EQ(stats.at("all_reduce").bytes_sent, 0);
  EXPECT_EQ(stats.at("all_gather").bytes_sent, 0);
  EXPECT_EQ(stats.at("reduce_scatter").bytes_sent, 0);
  EXPECT_EQ(stats.at("all_to_all").bytes_sent, 0);
  EXPECT_EQ(stats.at("all_to_all_v").bytes_sent, 0);
  EXPECT_EQ(stats.at("broadcast").bytes_sent, 128);
  EXPECT_EQ(stats.at("barrier").bytes_sent, 0);
  EXPECT_EQ(total(stats).calls, 7);
  comm_->reset_stats();
  EXPECT_TRUE(comm_->stats().empty());
}

// A kernel fills `in` on the compute stream and the gather reads it on the comm stream right
// after; a kernel then scales the gathered copy once the Work is waited on. Large enough (64 MiB)
// that a missing dependency in either direction would show stale values.
TEST_F(NcclOneRank, AsyncWorkIsOrderedWithTheComputeStream) {
  const int64_t n = int64_t{1} << 24;
  Tensor in = Tensor::zeros({n}, DType::kF32, Device::cuda());
  Tensor out = Tensor::zeros({n}, DType::kF32, Device::cuda());
  kernels::fill_(in, 3.0f);
  WorkPtr work = comm_->all_gather_async(in, out);
  work->wait();
  kernels::scale_(out, 2.0f);
  const std::vector<float> values = out.to_floats();  // a copy on the compute stream
  EXPECT_TRUE(work->done());
  int64_t wrong = 0;
  for (float v : values) wrong += v != 6.0f;
  EXPECT_EQ(wrong, 0);
}

TEST_F(NcclOneRank, SplitMakesAWorkingSubCommunicator) {
  std::unique_ptr<Communicator> sub = comm_->split(/*color=*/0, /*key=*/0, "tp");
  EXPECT_EQ(sub->size(), 1);
  EXPECT_EQ(sub->rank(), 0);
  EXPECT_EQ(sub->name(), "tp");
  const Tensor values = random_in({4}, 3, DType::kF32);
  Tensor t = on_gpu(values);
  sub->all_reduce(t, ReduceOp::kAvg);
  EXPECT_TRUE(tensors_close(t, values, 0.0));
}

}  // namespace
}  // namespace weft::comm
