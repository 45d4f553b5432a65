// CUDA GEMM (cuBLASLt), linear layers, elementwise kernels, SwiGLU and AdamW against the CPU
// kernels on the same random inputs, in f32 and bf16 storage.
#include <cmath>

#include "kernels/ops.h"
#include "tests/gpu/gpu_test_util.h"

namespace weft::kernels {
namespace {

using testing::gpu_empty;
using testing::GpuPrecisionTest;
using testing::GpuTest;
using testing::kBF16Precision;
using testing::kF32Precision;
using testing::on_gpu;
using testing::random_in;
using testing::tensors_close;

using CudaDense = GpuPrecisionTest;

TEST_P(CudaDense, GemmAllTransposesMatchCpu) {
  const int64_t m = 37, n = 29, k = 53;  // not multiples of any tile size
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "trans_a " << ta << " trans_b " << tb);
      const Tensor a = random_in(ta ? Shape{k, m} : Shape{m, k}, 1, dtype());
      const Tensor b = random_in(tb ? Shape{n, k} : Shape{k, n}, 2, dtype());
      const Tensor c0 = random_in({m, n}, 3, dtype());
      Tensor c = c0.clone();
      gemm(a, ta, b, tb, c, 1.5f, 0.5f);
      Tensor gc = on_gpu(c0, dtype());
      gemm(on_gpu(a, dtype()), ta, on_gpu(b, dtype()), tb, gc, 1.5f, 0.5f);
      EXPECT_TRUE(tensors_close(gc, c, tol()));
    }
  }
}

TEST_P(CudaDense, LinearForwardAndBackwardMatchCpu) {
  const Tensor x = random_in({2, 5, 24}, 4, dtype());
  const Tensor w = random_in({16, 24}, 5, dtype());
  const Tensor bias = random_in({16}, 6, dtype());
  const Tensor dy = random_in({2, 5, 16}, 7, dtype());
  const Tensor dw0 = random_in({16, 24}, 8, dtype());
  const Tensor db0 = random_in({16}, 9, dtype());

  Tensor y = Tensor::empty({2, 5, 16});
  linear_forward(x, w, &bias, y);
  Tensor dx = Tensor::empty({2, 5, 24});
  Tensor dw = dw0.clone();
  Tensor db = db0.clone();
  linear_backward(x, w, dy, &dx, &dw, &db);

  const Tensor gx = on_gpu(x, dtype());
  const Tensor gw = on_gpu(w, dtype());
  const Tensor gbias = on_gpu(bias, dtype());
  Tensor gy = gpu_empty({2, 5, 16}, dtype());
  linear_forward(gx, gw, &gbias, gy);
  Tensor gdx = gpu_empty({2, 5, 24}, dtype());
  Tensor gdw = on_gpu(dw0, dtype());
  Tensor gdb = on_gpu(db0, dtype());
  linear_backward(gx, gw, on_gpu(dy, dtype()), &gdx, &gdw, &gdb);

  EXPECT_TRUE(tensors_close(gy, y, tol()));
  EXPECT_TRUE(tensors_close(gdx, dx, tol()));
  EXPECT_TRUE(tensors_close(gdw, dw, tol()));
  EXPECT_TRUE(tensors_close(gdb, db, tol()));
}

TEST_P(CudaDense, ElementwiseOpsAndSumSquaresMatchCpu) {
  const Shape shape = {3, 1001};
  const Tensor a = random_in(shape, 10, dtype());
  const Tensor b = random_in(shape, 11, dtype());
  const Tensor ga = on_gpu(a, dtype());
  const Tensor gb = on_gpu(b, dtype());

  Tensor sum = Tensor::empty(shape);
  add(a, b, sum);
  Tensor gsum = gpu_empty(shape, dtype());
  add(ga, gb, gsum);
  EXPECT_TRUE(tensors_close(gsum, sum, tol()));

  Tensor acc = a.clone();
  add_(acc, b, -0.75f);
  scale_(acc, 3.0f);
  Tensor gacc = on_gpu(a, dtype());
  add_(gacc, gb, -0.75f);
  scale_(gacc, 3.0f);
  EXPECT_TRUE(tensors_close(gacc, acc, tol()));

  const double expected = sum_squares(a);
  EXPECT_NEAR(sum_squares(ga), expected, 1e-9 * expected);  // inputs equal; sums in double

  fill_(gacc, 2.5f);
  EXPECT_TRUE(tensors_close(gacc, Tensor::full(shape, 2.5f), 0.0));
}

TEST_P(CudaDense, SwiGluForwardAndBackwardMatchCpu) {
  const Shape shape = {7, 45};
  const Tensor gate = random_in(shape, 12, dtype(), -4.0f, 4.0f);
  const Tensor up = random_in(shape, 13, dtype());
  const Tensor dh = random_in(shape, 14, dtype());
  Tensor h = Tensor::empty(shape);
  Tensor dgate = Tensor::empty(shape);
  Tensor dup = Tensor::empty(shape);
  swiglu_forward(gate, up, h);
  swiglu_backward(gate, up, dh, dgate, dup);

  const Tensor ggate = on_gpu(gate, dtype());
  const Tensor gup = on_gpu(up, dtype());
  Tensor gh = gpu_empty(shape, dtype());
  Tensor gdgate = gpu_empty(shape, dtype());
  Tensor gdup = gpu_empty(shape, dtype());
  swiglu_forward(ggate, gup, gh);
  swiglu_backward(ggate, gup, on_gpu(dh, dtype()), gdgate, gdup);
  EXPECT_TRUE(tensors_close(gh, h, tol()));
  EXPECT_TRUE(tensors_close(gdgate, dgate, tol()));
  EXPECT_TRUE(tensors_close(gdup, dup, tol()));
}

INSTANTIATE_TEST_SUITE_P(Precisions, CudaDense, ::testing::Values(kF32Precision, kBF16Precision));

using CudaDenseF32 = GpuTest;

// bf16 x f32 operands go through f32 copies; bf16 x bf16 may write an f32 output; operands cut
// at an odd row start are not 16-byte aligned, which cuBLASLt must be told.
TEST_F(CudaDenseF32, GemmMixedDtypesAndUnalignedSlicesMatchCpu) {
  const int64_t m = 9, n = 11, k = 13;
  const Tensor a_all = random_in({m + 1, k}, 20, DType::kBF16);
  const Tensor b = random_in({k, n}, 21, DType::kBF16);
  const Tensor a = a_all.slice(1, m + 1);
  Tensor c = Tensor::empty({m, n});
  gemm(a, false, b, false, c, 1.0f, 0.0f);

  const Tensor ga = on_gpu(a_all, DType::kBF16).slice(1, m + 1);
  Tensor gc = gpu_empty({m, n}, DType::kF32);
  gemm(ga, false, on_gpu(b, DType::kF32), false, gc, 1.0f, 0.0f);
  EXPECT_TRUE(tensors_close(gc, c, kF32Precision.tol));

  Tensor gc2 = gpu_empty({m, n}, DType::kF32);
  gemm(ga, false, on_gpu(b, DType::kBF16), false, gc2, 1.0f, 0.0f);
  EXPECT_TRUE(tensors_close(gc2, c, kF32Precision.tol));
}

TEST_F(CudaDenseF32, GemmWithEmptyInnerDimensionScalesOrZeroesC) {
  const Tensor c0 = random_in({4, 6}, 22, DType::kF32);
  Tensor gc = on_gpu(c0);
  gemm(gpu_empty({4, 0}, DType::kF32), false, gpu_empty({0, 6}, DType::kF32), false, gc, 1.0f,
       2.0f);
  Tensor expected = c0.clone();
  scale_(expected, 2.0f);
  EXPECT_TRUE(tensors_close(gc, expected, 0.0));
  gemm(gpu_empty({4, 0}, DType::kF32), false, gpu_empty({0, 6}, DType::kF32), false, gc, 1.0f,
       0.0f);
  EXPECT_TRUE(tensors_close(gc, Tensor::zeros({4, 6}), 0.0));
}

TEST_F(CudaDenseF32, AdamWThreeStepsMatchCpu) {
  const Shape shape = {33, 17};
  const AdamWConfig cfg{
      .lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
  Tensor p = random_in(shape, 23, DType::kF32);
  Tensor m = Tensor::zeros(shape);
  Tensor v = Tensor::zeros(shape);
  Tensor gp = on_gpu(p);
  Tensor gm = on_gpu(m);
  Tensor gv = on_gpu(v);
  for (int64_t step = 1; step <= 3; ++step) {
    const Tensor grad = random_in(shape, 30 + step, DType::kF32);
    adamw_step(p, grad, m, v, cfg, step);
    adamw_step(gp, on_gpu(grad), gm, gv, cfg, step);
  }
  EXPECT_TRUE(tensors_close(gp, p, 1e-5));
  EXPECT_TRUE(tensors_close(gm, m, 1e-5));
  EXPECT_TRUE(tensors_close(gv, v, 1e-5));
}

}  // namespace
}  // namespace weft::kernels
