// TokenWeave's fused Hopper step (comm/nccl/fused_residual_norm.h) against its definition:
// residual + the group's sum of partials, then RMSNorm, on every rank. Runs where NVLS multimem
// exists (an H100/H200 SXM node; with one process the group is one GPU and the multimem sum is
// the rank's own partial); skipped elsewhere, where create() returns null and TokenWeave keeps
// the unfused collectives.
#include "comm/nccl/fused_residual_norm.h"

#include <mpi.h>

#include <cmath>
#include <memory>
#include <vector>

#include "comm/mpi_runtime.h"
#include "comm/nccl/nccl_communicator.h"
#include "tests/gpu/gpu_test_util.h"

namespace weft::comm {
namespace {

using testing::on_gpu;
using testing::random_in;
using testing::tensors_close;

TEST(FusedResidualNorm, EqualsResidualPlusSumThenRmsNorm) {
  WEFT_SKIP_WITHOUT_GPU();
  MpiRuntime mpi(nullptr, nullptr);
  int world = 0, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::unique_ptr<Communicator> comm = make_nccl_communicator(MPI_COMM_WORLD, rank, "tp");
  const int64_t rows = 8 * world, hidden = 256;
  std::unique_ptr<FusedResidualNorm> fused =
      FusedResidualNorm::create(nccl_handle(*comm), rows, hidden);
  if (fused == nullptr) GTEST_SKIP() << "no NVLS multimem on this GPU";
  // Every rank's partial is random_in(seed r); the reference sums them on the host.
  const Tensor residual_host = random_in({rows / world, hidden}, 100 + rank, DType::kF32);
  const Tensor weight_host = random_in({hidden}, 7, DType::kF32);
  fused->partial(rows).copy_from(on_gpu(random_in({rows, hidden}, rank, DType::kF32)));
  Tensor residual = on_gpu(residual_host);
  const Tensor weight = on_gpu(weight_host);
  fused->run(rows, residual, weight, 1e-6f);
  // Expected: h = residual + sum_r partial_r (this rank's rows), normed rows of every rank.
  std::vector<float> sum(rows * hidden, 0.0f);
  for (int r = 0; r < world; ++r) {
    const std::vector<float> p = random_in({rows, hidden}, r, DType::kF32).to_floats();
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += p[i];
  }
  std::vector<float> normed(rows * hidden);
  std::vector<float> h_mine;
  for (int owner = 0; owner < world; ++owner) {
    const std::vector<float> res =
        random_in({rows / world, hidden}, 100 + owner, DType::kF32).to_floats();
    const std::vector<float> w = weight_host.to_floats();
    for (int64_t i = 0; i < rows / world; ++i) {
      const int64_t row = owner * (rows / world) + i;
      double ss = 0;
      std::vector<float> h(hidden);
      for (int64_t j = 0; j < hidden; ++j) {
        h[j] = res[i * hidden + j] + sum[row * hidden + j];
        ss += static_cast<double>(h[j]) * h[j];
      }
      const float rstd = 1.0f / std::sqrt(static_cast<float>(ss / hidden) + 1e-6f);
      for (int64_t j = 0; j < hidden; ++j) normed[row * hidden + j] = h[j] * rstd * w[j];
      if (owner == rank) h_mine.insert(h_mine.end(), h.begin(), h.end());
    }
  }
  EXPECT_TRUE(tensors_close(residual.to(Device::cpu()),
                            Tensor::from_floats(h_mine, {rows / world, hidden}), 1e-5));
  EXPECT_TRUE(tensors_close(fused->normed(rows).to(Device::cpu()),
                            Tensor::from_floats(normed, {rows, hidden}), 1e-4));
  fused.reset();
}

}  // namespace
}  // namespace weft::comm
