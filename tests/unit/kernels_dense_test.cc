// GEMM, the linear layer and the elementwise kernels against plain double loops, plus the
// dispatch layer's shape checks.
#include <vector>

#include "kernels/ops.h"
#include "tests/support/test_util.h"

namespace weft::kernels {
namespace {

using testing::random_tensor;

// [rows, cols] matrix in double, read from an f32 tensor, optionally transposed.
struct Matrix {
  int64_t rows, cols;
  std::vector<double> v;
  double at(int64_t i, int64_t j) const { return v[i * cols + j]; }
};

Matrix op(const Tensor& t, bool trans) {
  const std::vector<float> f = t.to_floats();
  const int64_t r = t.dim(0), c = t.dim(1);
  Matrix m{trans ? c : r, trans ? r : c, std::vector<double>(f.size())};
  for (int64_t i = 0; i < r; ++i) {
    for (int64_t j = 0; j < c; ++j) m.v[trans ? j * r + i : i * c + j] = f[i * c + j];
  }
  return m;
}

// alpha * a @ b + beta * c0 in double, as an f32 tensor.
Tensor reference_gemm(const Matrix& a, const Matrix& b, double alpha, double beta,
                      const Tensor& c0) {
  const std::vector<float> c = c0.to_floats();
  std::vector<float> out(a.rows * b.cols);
  for (int64_t i = 0; i < a.rows; ++i) {
    for (int64_t j = 0; j < b.cols; ++j) {
      double s = 0;
      for (int64_t x = 0; x < a.cols; ++x) s += a.at(i, x) * b.at(x, j);
      out[i * b.cols + j] = static_cast<float>(alpha * s + beta * c[i * b.cols + j]);
    }
  }
  return Tensor::from_floats(out, {a.rows, b.cols});
}

TEST(Gemm, AllTransposesMatchReference) {
  const int64_t m = 5, n = 7, k = 3;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const Tensor a = random_tensor(ta ? Shape{k, m} : Shape{m, k}, 1);
      const Tensor b = random_tensor(tb ? Shape{n, k} : Shape{k, n}, 2);
      const Tensor c0 = random_tensor({m, n}, 3);
      Tensor c = c0.clone();
      gemm(a, ta, b, tb, c, 0.5f, 2.0f);
      EXPECT_TENSORS_CLOSE(c, reference_gemm(op(a, ta), op(b, tb), 0.5, 2.0, c0), 1e-6)
          << "trans_a " << ta << " trans_b " << tb;
    }
  }
}

TEST(Gemm, BetaZeroOverwritesAndEmptyInnerDimensionScales) {
  const Tensor a = random_tensor({4, 6}, 4);
  const Tensor b = random_tensor({6, 3}, 5);
  Tensor c = Tensor::full({4, 3}, 1e30f);
  gemm(a, false, b, false, c);
  EXPECT_TENSORS_CLOSE(c, reference_gemm(op(a, false), op(b, false), 1, 0, Tensor::zeros({4, 3})),
                       1e-6);
  Tensor d = Tensor::full({2, 2}, 3.0f);
  gemm(Tensor::zeros({2, 0}), false, Tensor::zeros({0, 2}), false, d, 1.0f, 0.5f);
  EXPECT_TENSORS_CLOSE(d, Tensor::full({2, 2}, 1.5f), 0.0);
}

TEST(Linear, ForwardWithBiasOnThreeDimensionalInput) {
  const int64_t in = 9, out = 5;
  const Tensor x = random_tensor({2, 3, in}, 6);
  const Tensor w = random_tensor({out, in}, 7);
  const Tensor bias = random_tensor({out}, 8);
  Tensor y = Tensor::empty({2, 3, out});
  linear_forward(x, w, &bias, y);
  Tensor bias_rows = Tensor::empty({6, out});
  for (int64_t r = 0; r < 6; ++r) bias_rows.slice(r, r + 1).copy_from(bias.view({1, out}));
  const Tensor want = reference_gemm(op(x.view({6, in}), false), op(w, true), 1, 1, bias_rows);
  EXPECT_TENSORS_CLOSE(y.view({6, out}), want, 1e-6);

  Tensor y_nobias = Tensor::full({2, 3, out}, 4.0f);
  linear_forward(x, w, nullptr, y_nobias);
  EXPECT_TENSORS_CLOSE(
      y_nobias.view({6, out}),
      reference_gemm(op(x.view({6, in}), false), op(w, true), 1, 0, Tensor::zeros({6, out})), 1e-6);
}

TEST(Linear, BackwardWritesDxAndAddsDwDb) {
  const int64_t rows = 7, in = 5, out = 3;
  const Tensor x = random_tensor({rows, in}, 9);
  const Tensor w = random_tensor({out, in}, 10);
  const Tensor dy = random_tensor({rows, out}, 11);
  const Tensor dw0 = random_tensor({out, in}, 12);
  const Tensor db0 = random_tensor({out}, 13);
  Tensor dx = Tensor::full({rows, in}, 9.0f);
  Tensor dw = dw0.clone();
  Tensor db = db0.clone();
  linear_backward(x, w, dy, &dx, &dw, &db);
  EXPECT_TENSORS_CLOSE(
      dx, reference_gemm(op(dy, false), op(w, false), 1, 0, Tensor::zeros({rows, in})), 1e-6);
  EXPECT_TENSORS_CLOSE(dw, reference_gemm(op(dy, true), op(x, false), 1, 1, dw0), 1e-6);
  const Tensor ones = Tensor::full({1, rows}, 1.0f);
  EXPECT_TENSORS_CLOSE(db.view({1, out}),
                       reference_gemm(op(ones, false), op(dy, false), 1, 1, db0.view({1, out})),
                       1e-6);
}

TEST(Elementwise, AddScaleFillAndSumSquares) {
  const Tensor a = random_tensor({3, 5}, 14);
  const Tensor b = random_tensor({3, 5}, 15);
  const std::vector<float> av = a.to_floats(), bv = b.to_floats();
  std::vector<float> sum(av.size()), axpy(av.size()), scaled(av.size());
  double squares = 0;
  for (size_t i = 0; i < av.size(); ++i) {
    sum[i] = av[i] + bv[i];
    axpy[i] = av[i] - 0.25f * bv[i];
    scaled[i] = av[i] * 3.0f;
    squares += static_cast<double>(av[i]) * av[i];
  }
  Tensor out = Tensor::empty({3, 5});
  add(a, b, out);
  EXPECT_TENSORS_CLOSE(out, Tensor::from_floats(sum, {3, 5}), 1e-7);
  Tensor acc = a.clone();
  add_(acc, b, -0.25f);
  EXPECT_TENSORS_CLOSE(acc, Tensor::from_floats(axpy, {3, 5}), 1e-7);
  Tensor s = a.clone();
  scale_(s, 3.0f);
  EXPECT_TENSORS_CLOSE(s, Tensor::from_floats(scaled, {3, 5}), 1e-7);
  fill_(s, -2.0f);
  EXPECT_TENSORS_CLOSE(s, Tensor::full({3, 5}, -2.0f), 0.0);
  EXPECT_NEAR(sum_squares(a), squares, 1e-9 * squares);
}

TEST(KernelChecksDeathTest, NameTheMismatchedShapes) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  const Tensor a = Tensor::zeros({2, 3});
  const Tensor b = Tensor::zeros({4, 5});
  Tensor c = Tensor::zeros({2, 5});
  EXPECT_DEATH(gemm(a, false, b, false, c),
               "gemm: inner dimensions differ.*\\[2, 3\\].*\\[4, 5\\]");
  Tensor wrong = Tensor::zeros({3, 5});
  EXPECT_DEATH(add(a, a, wrong), "add: out is \\[3, 5\\], expected \\[2, 3\\]");
  const Tensor ints = Tensor::from_ints({1, 2}, {1, 2});
  Tensor out = Tensor::zeros({1, 2});
  EXPECT_DEATH(add(ints, ints, out), "expected f32 on CPU");
}

}  // namespace
}  // namespace weft::kernels
