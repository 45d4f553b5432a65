// Rotary embedding (HF rotate-half) against a plain reference, with arbitrary (zigzag)
// positions, one inv_freq row for every token or a row per token, and a factor on cos and sin;
// the backward is the transpose of the forward.
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

// Plain RoPE's [d/2] inverse frequencies 1 / theta^(2i/d), scaled by `scale`.
std::vector<float> inv_freq_of(float theta, int64_t d, float scale = 1.0f) {
  std::vector<float> f(d / 2);
  for (int64_t i = 0; i < d / 2; ++i) {
    f[i] = scale / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(d));
  }
  return f;
}

// Rotate-half with HF's f32 angles, angle = float(p) * inv_freq[t or 0][i], times `factor`.
std::vector<float> reference(const Tensor& x, const std::vector<int64_t>& positions,
                             const Tensor& inv_freq, float factor) {
  const int64_t batch = x.dim(0), seq = x.dim(1), heads = x.dim(2), d = x.dim(3);
  const std::vector<float> in = x.to_floats();
  const std::vector<float> freq = inv_freq.to_floats();
  const bool per_token = inv_freq.ndim() == 2;
  std::vector<float> out(in.size());
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < seq; ++t) {
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t base = ((b * seq + t) * heads + h) * d;
        for (int64_t i = 0; i < d / 2; ++i) {
          const float f = freq[(per_token ? t * d / 2 : 0) + i];
          const double angle = static_cast<float>(positions[t]) * f;
          const double c = factor * std::cos(angle), s = factor * std::sin(angle);
          const double x0 = in[base + i], x1 = in[base + i + d / 2];
          out[base + i] = static_cast<float>(x0 * c - x1 * s);
          out[base + i + d / 2] = static_cast<float>(x1 * c + x0 * s);
        }
      }
    }
  }
  return out;
}

TEST(Rope, ForwardMatchesReferenceForI32AndI64Positions) {
  const Shape shape = {2, 6, 3, 10};
  const std::vector<int64_t> pos = {0, 1, 2, 21, 22, 23};  // zigzag-like: two chunks
  const Tensor inv_freq = Tensor::from_floats(inv_freq_of(10000.0f, 10), {5});
  const Tensor x = random_tensor(shape, 1);
  const Tensor want = Tensor::from_floats(reference(x, pos, inv_freq, 1.0f), shape);
  Tensor y64 = x.clone();
  rope_forward(y64, Tensor::from_ints(pos, {6}), inv_freq, 1.0f);
  EXPECT_TENSORS_CLOSE(y64, want, 1e-6);
  Tensor y32 = x.clone();
  rope_forward(y32, ints32(pos, {6}), inv_freq, 1.0f);
  EXPECT_TENSORS_CLOSE(y32, want, 1e-6);
}

// A row of frequencies per token (dynamic RoPE in a serving step) and YaRN's factor on cos and
// sin: token t rotates by its own row and every output is scaled.
TEST(Rope, PerTokenFrequenciesAndAttentionFactor) {
  const Shape shape = {1, 3, 2, 8};
  const std::vector<int64_t> pos = {4, 9, 30};
  std::vector<float> rows;
  for (float theta : {10000.0f, 40000.0f, 500.0f}) {
    const std::vector<float> row = inv_freq_of(theta, 8);
    rows.insert(rows.end(), row.begin(), row.end());
  }
  const Tensor inv_freq = Tensor::from_floats(rows, {3, 4});
  const Tensor x = random_tensor(shape, 4);
  Tensor y = x.clone();
  rope_forward(y, Tensor::from_ints(pos, {3}), inv_freq, 1.25f);
  EXPECT_TENSORS_CLOSE(y, Tensor::from_floats(reference(x, pos, inv_freq, 1.25f), shape), 1e-6);
  // The per-token rows differ: the first token's row applied to all gives another answer.
  Tensor shared = x.clone();
  rope_forward(shared, Tensor::from_ints(pos, {3}), inv_freq.slice(0, 1).view({4}), 1.25f);
  EXPECT_GT(testing::max_relative_error(shared, y), 1e-2);
}

// <R x, y> == <x, R^T y>, and R^T R x == x (with a factor a: R^T R x == a^2 x).
TEST(Rope, BackwardIsTheTransposeOfForward) {
  const Shape shape = {1, 5, 2, 8};
  const Tensor pos = Tensor::from_ints({3, 4, 50, 51, 700}, {5});
  const Tensor inv_freq = Tensor::from_floats(inv_freq_of(10000.0f, 8, 0.25f), {4});
  const Tensor x = random_tensor(shape, 2);
  const Tensor y = random_tensor(shape, 3);
  for (const float factor : {1.0f, 1.5f}) {
    SCOPED_TRACE(factor);
    Tensor rx = x.clone();
    rope_forward(rx, pos, inv_freq, factor);
    Tensor rty = y.clone();
    rope_backward(rty, pos, inv_freq, factor);
    const std::vector<float> a = rx.to_floats(), b = y.to_floats();
    const std::vector<float> c = x.to_floats(), e = rty.to_floats();
    double lhs = 0, rhs = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      lhs += static_cast<double>(a[i]) * b[i];
      rhs += static_cast<double>(c[i]) * e[i];
    }
    EXPECT_NEAR(lhs, rhs, 1e-5 * std::fabs(lhs) + 1e-6);
    rope_backward(rx, pos, inv_freq, factor);
    Tensor scaled = x.clone();
    scale_(scaled, factor * factor);
    EXPECT_TENSORS_CLOSE(rx, scaled, 1e-6);
  }
}

}  // namespace
}  // namespace weft::kernels
