// Rotary embedding (HF rotate-half) against a plain reference, with arbitrary (zigzag)
// positions; the backward is the transpose of the forward.
#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/test_util.h"

namespace weft::kernels {
namespace {

using testing::random_tensor;

// An i32 index tensor (from_ints makes i64).
Tensor ints32(const std::vector<int64_t>& values, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::kI32);
  for (size_t i = 0; i < values.size(); ++i) t.data<int32_t>()[i] = static_cast<int32_t>(values[i]);
  return t;
}

constexpr float kTheta = 10000.0f;

// Rotate-half with HF's f32 angles: inv_freq_i = 1 / theta^(2i/d), angle = float(p) * inv_freq.
std::vector<float> reference(const Tensor& x, const std::vector<int64_t>& positions) {
  const int64_t batch = x.dim(0), seq = x.dim(1), heads = x.dim(2), d = x.dim(3);
  const std::vector<float> in = x.to_floats();
  std::vector<float> out(in.size());
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < seq; ++t) {
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t base = ((b * seq + t) * heads + h) * d;
        for (int64_t i = 0; i < d / 2; ++i) {
          const float inv_freq = 1.0f / std::pow(kTheta, static_cast<float>(2 * i) / d);
          const double angle = static_cast<float>(positions[t]) * inv_freq;
          const double x0 = in[base + i], x1 = in[base + i + d / 2];
          out[base + i] = static_cast<float>(x0 * std::cos(angle) - x1 * std::sin(angle));
          out[base + i + d / 2] = static_cast<float>(x1 * std::cos(angle) + x0 * std::sin(angle));
        }
      }
    }
  }
  return out;
}

TEST(Rope, ForwardMatchesReferenceForI32AndI64Positions) {
  const Shape shape = {2, 6, 3, 10};
  const std::vector<int64_t> pos = {0, 1, 2, 21, 22, 23};  // zigzag-like: two chunks
  const Tensor x = random_tensor(shape, 1);
  const Tensor want = Tensor::from_floats(reference(x, pos), shape);
  Tensor y64 = x.clone();
  rope_forward(y64, Tensor::from_ints(pos, {6}), kTheta);
  EXPECT_TENSORS_CLOSE(y64, want, 1e-6);
  Tensor y32 = x.clone();
  rope_forward(y32, ints32(pos, {6}), kTheta);
  EXPECT_TENSORS_CLOSE(y32, want, 1e-6);
}

// <R x, y> == <x, R^T y>, and R^T R x == x.
TEST(Rope, BackwardIsTheTransposeOfForward) {
  const Shape shape = {1, 5, 2, 8};
  const Tensor pos = Tensor::from_ints({3, 4, 50, 51, 700}, {5});
  const Tensor x = random_tensor(shape, 2);
  const Tensor y = random_tensor(shape, 3);
  Tensor rx = x.clone();
  rope_forward(rx, pos, kTheta);
  Tensor rty = y.clone();
  rope_backward(rty, pos, kTheta);
  const std::vector<float> a = rx.to_floats(), b = y.to_floats();
  const std::vector<float> c = x.to_floats(), e = rty.to_floats();
  double lhs = 0, rhs = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    lhs += static_cast<double>(a[i]) * b[i];
    rhs += static_cast<double>(c[i]) * e[i];
  }
  EXPECT_NEAR(lhs, rhs, 1e-5 * std::fabs(lhs) + 1e-6);
  rope_backward(rx, pos, kTheta);
  EXPECT_TENSORS_CLOSE(rx, x, 1e-6);
}

}  // namespace
}  // namespace weft::kernels
