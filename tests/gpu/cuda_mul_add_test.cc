// mul_add_ (a = b * a + c, the combine of the NCCL All-Scan) on the GPU against the CPU kernel,
// in f32 and bf16 storage, and on a 1-D piece of a larger tensor as the scan passes it.
#include "kernels/ops.h"
#include "tests/gpu/gpu_test_util.h"

namespace weft::kernels {
namespace {

using testing::GpuPrecisionTest;
using testing::kBF16Precision;
using testing::kF32Precision;
using testing::on_gpu;
using testing::random_in;
using testing::tensors_close;

using CudaMulAdd = GpuPrecisionTest;

TEST_P(CudaMulAdd, MatchesCpu) {
  const Shape shape = {3, 1001};
  const Tensor a = random_in(shape, 20, dtype());
  const Tensor b = random_in(shape, 21, dtype());
  const Tensor c = random_in(shape, 22, dtype());
  Tensor expected = a.clone();
  mul_add_(expected, b, c);
  Tensor got = on_gpu(a, dtype());
  mul_add_(got, on_gpu(b, dtype()), on_gpu(c, dtype()));
  EXPECT_TRUE(tensors_close(got, expected, tol()));
}

TEST_P(CudaMulAdd, WritesOnlyThePieceItIsGiven) {
  const Tensor a = random_in({10}, 23, dtype());
  const Tensor b = random_in({4}, 24, dtype());
  const Tensor c = random_in({4}, 25, dtype());
  Tensor expected = a.clone();
  Tensor expected_piece = expected.slice(3, 7);
  mul_add_(expected_piece, b, c);
  Tensor got = on_gpu(a, dtype());
  Tensor got_piece = got.slice(3, 7);
  mul_add_(got_piece, on_gpu(b, dtype()), on_gpu(c, dtype()));
  EXPECT_TRUE(tensors_close(got, expected, tol()));
}

INSTANTIATE_TEST_SUITE_P(Precisions, CudaMulAdd, ::testing::Values(kF32Precision, kBF16Precision));

}  // namespace
}  // namespace weft::kernels
