// Softmax attention kernels against a plain double-precision reference: forward (causal with
// offsets, non-causal, GQA, rows that see no key), backward against central differences of the
// reference, and the log-sum-exp merge of key blocks that ring attention is built on.
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/numeric_grad.h"
#include "tests/support/test_util.h"

namespace weft::kernels {
namespace {

using testing::numeric_grad;
using testing::random_tensor;

struct Case {
  int64_t batch, tq, tk, heads, kv_heads, d;
  bool causal;
  int64_t q_offset, k_offset;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << "B" << c.batch << " Tq" << c.tq << " Tk" << c.tk << " H" << c.heads << " Hkv" << c.kv_heads
      << " d" << c.d << (c.causal ? " causal" : " full") << " q_offset " << c.q_offset
      << " k_offset " << c.k_offset;
}

std::vector<double> as_doubles(const Tensor& t) {
  const std::vector<float> f = t.to_floats();
  return {f.begin(), f.end()};
}

Tensor as_tensor(const std::vector<double>& v, const Shape& shape) {
  return Tensor::from_floats(std::vector<float>(v.begin(), v.end()), shape);
}

// Reference attention in double. Returns o [B,Tq,H,d]; fills lse [B,H,Tq] when non-null.
std::vector<double> reference(const Case& c, const std::vector<double>& q,
                              const std::vector<double>& k, const std::vector<double>& v,
                              double scale, std::vector<double>* lse = nullptr) {
  std::vector<double> o(c.batch * c.tq * c.heads * c.d, 0.0);
  if (lse != nullptr) lse->assign(c.batch * c.heads * c.tq, -INFINITY);
  const int64_t group = c.heads / c.kv_heads;
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t h = 0; h < c.heads; ++h) {
      const int64_t hk = h / group;
      for (int64_t i = 0; i < c.tq; ++i) {
        const double* qi = &q[((b * c.tq + i) * c.heads + h) * c.d];
        std::vector<double> s;
        std::vector<int64_t> keys;
        for (int64_t j = 0; j < c.tk; ++j) {
          if (c.causal && c.k_offset + j > c.q_offset + i) continue;
          const double* kj = &k[((b * c.tk + j) * c.kv_heads + hk) * c.d];
          double dot = 0;
          for (int64_t x = 0; x < c.d; ++x) dot += qi[x] * kj[x];
          s.push_back(scale * dot);
          keys.push_back(j);
        }
        if (keys.empty()) continue;
        double m = -INFINITY;
        for (double x : s) m = std::max(m, x);
        double sum = 0;
        for (double x : s) sum += std::exp(x - m);
        if (lse != nullptr) (*lse)[(b * c.heads + h) * c.tq + i] = m + std::log(sum);
        double* oi = &o[((b * c.tq + i) * c.heads + h) * c.d];
        for (size_t n = 0; n < keys.size(); ++n) {
          const double p = std::exp(s[n] - m) / sum;
          const double* vj = &v[((b * c.tk + keys[n]) * c.kv_heads + hk) * c.d];
          for (int64_t x = 0; x < c.d; ++x) oi[x] += p * vj[x];
        }
      }
    }
  }
  return o;
}

// [B, T, ...] -> [B, end-begin, ...]: positions [begin, end) of dim 1.
Tensor slice_time(const Tensor& t, int64_t begin, int64_t end) {
  Shape shape = t.shape();
  const int64_t row = t.numel() / (shape[0] * shape[1]);
  const std::vector<float> src = t.to_floats();
  std::vector<float> dst;
  for (int64_t b = 0; b < shape[0]; ++b) {
    dst.insert(dst.end(), src.begin() + (b * shape[1] + begin) * row,
               src.begin() + (b * shape[1] + end) * row);
  }
  shape[1] = end - begin;
  return Tensor::from_floats(dst, shape);
}

// lse entries equal within 1e-5 relative; -inf (no visible key) exactly.
void expect_lse_close(const Tensor& lse, const std::vector<double>& want) {
  const std::vector<float> got = lse.to_floats();
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isinf(want[i])) {
      EXPECT_EQ(got[i], -std::numeric_limits<float>::infinity()) << "lse entry " << i;
    } else {
      EXPECT_NEAR(got[i], want[i], 1e-5 * std::max(1.0, std::fabs(want[i]))) << "lse entry " << i;
    }
  }
}

class AttentionCases : public ::testing::TestWithParam<Case> {
 protected:
  Shape q_shape() const { return {c().batch, c().tq, c().heads, c().d}; }
  Shape k_shape() const { return {c().batch, c().tk, c().kv_heads, c().d}; }
  Shape lse_shape() const { return {c().batch, c().heads, c().tq}; }
  const Case& c() const { return GetParam(); }
  double scale() const { return 1.0 / std::sqrt(static_cast<double>(c().d)); }
};

TEST_P(AttentionCases, ForwardMatchesReference) {
  const Tensor q = random_tensor(q_shape(), 1, -2, 2);
  const Tensor k = random_tensor(k_shape(), 2, -2, 2);
  const Tensor v = random_tensor(k_shape(), 3);
  Tensor o = Tensor::full(q_shape(), 7.0f);  // stale values must be overwritten
  Tensor lse = Tensor::empty(lse_shape());
  attention_forward(q, k, v, scale(), c().causal, c().q_offset, c().k_offset, o, lse);
  std::vector<double> want_lse;
  const std::vector<double> want =
      reference(c(), as_doubles(q), as_doubles(k), as_doubles(v), scale(), &want_lse);
  EXPECT_TENSORS_CLOSE(o, as_tensor(want, q_shape()), 1e-5);
  expect_lse_close(lse, want_lse);
}

TEST_P(AttentionCases, BackwardMatchesFiniteDifferencesAndAdds) {
  const Tensor q = random_tensor(q_shape(), 4, -2, 2);
  const Tensor k = random_tensor(k_shape(), 5, -2, 2);
  const Tensor v = random_tensor(k_shape(), 6);
  const Tensor dout = random_tensor(q_shape(), 7);
  Tensor o = Tensor::empty(q_shape());
  Tensor lse = Tensor::empty(lse_shape());
  attention_forward(q, k, v, scale(), c().causal, c().q_offset, c().k_offset, o, lse);
  // Start the gradients from non-zero values: the kernel must add to them.
  const Tensor dq0 = random_tensor(q_shape(), 8);
  const Tensor dk0 = random_tensor(k_shape(), 9);
  const Tensor dv0 = random_tensor(k_shape(), 10);
  Tensor dq = dq0.clone();
  Tensor dk = dk0.clone();
  Tensor dv = dv0.clone();
  attention_backward(q, k, v, o, lse, dout, scale(), c().causal, c().q_offset, c().k_offset, dq, dk,
                     dv);

  const std::vector<double> qd = as_doubles(q), kd = as_doubles(k), vd = as_doubles(v);
  const std::vector<double> w = as_doubles(dout);
  auto expected = [&](const Tensor& start, const std::vector<double>& grad, const Shape& shape) {
    std::vector<double> sum = as_doubles(start);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += grad[i];
    return as_tensor(sum, shape);
  };
  const auto gq =
      numeric_grad([&](const auto& x) { return reference(c(), x, kd, vd, scale()); }, qd, w);
  const auto gk =
      numeric_grad([&](const auto& x) { return reference(c(), qd, x, vd, scale()); }, kd, w);
  const auto gv =
      numeric_grad([&](const auto& x) { return reference(c(), qd, kd, x, scale()); }, vd, w);
  EXPECT_TENSORS_CLOSE(dq, expected(dq0, gq, q_shape()), 2e-5);
  EXPECT_TENSORS_CLOSE(dk, expected(dk0, gk, k_shape()), 2e-5);
  EXPECT_TENSORS_CLOSE(dv, expected(dv0, gv, k_shape()), 2e-5);
}

// Ring attention's base: attention over keys [0, split) and [split, Tk), each with its own
// k_offset, merged by log-sum-exp, equals attention over all keys; and the backward of each
// block with the merged (o, lse) sums to the whole backward (dq) and splits it (dk, dv).
TEST_P(AttentionCases, KeyBlocksMergeToWholeAttention) {
  const Tensor q = random_tensor(q_shape(), 11, -2, 2);
  const Tensor k = random_tensor(k_shape(), 12, -2, 2);
  const Tensor v = random_tensor(k_shape(), 13);
  const Tensor dout = random_tensor(q_shape(), 14);
  const int64_t split = c().tk / 2;
  const float s = static_cast<float>(scale());
  Tensor o_all = Tensor::empty(q_shape());
  Tensor lse_all = Tensor::empty(lse_shape());
  attention_forward(q, k, v, s, c().causal, c().q_offset, c().k_offset, o_all, lse_all);

  const Tensor k1 = slice_time(k, 0, split), v1 = slice_time(v, 0, split);
  const Tensor k2 = slice_time(k, split, c().tk), v2 = slice_time(v, split, c().tk);
  Tensor o = Tensor::empty(q_shape());
  Tensor lse = Tensor::empty(lse_shape());
  Tensor o_b = Tensor::empty(q_shape());
  Tensor lse_b = Tensor::empty(lse_shape());
  // Second block first, so that the merge also meets rows whose running lse is -inf.
  attention_forward(q, k2, v2, s, c().causal, c().q_offset, c().k_offset + split, o, lse);
  attention_forward(q, k1, v1, s, c().causal, c().q_offset, c().k_offset, o_b, lse_b);
  attention_merge(o, lse, o_b, lse_b);
  EXPECT_TENSORS_CLOSE(o, o_all, 1e-5);
  expect_lse_close(lse, as_doubles(lse_all));

  Tensor dq_all = Tensor::zeros(q_shape()), dk_all = Tensor::zeros(k_shape());
  Tensor dv_all = Tensor::zeros(k_shape());
  attention_backward(q, k, v, o_all, lse_all, dout, s, c().causal, c().q_offset, c().k_offset,
                     dq_all, dk_all, dv_all);
  Tensor dq = Tensor::zeros(q_shape());
  Tensor dk1 = Tensor::zeros(k1.shape()), dv1 = Tensor::zeros(k1.shape());
  Tensor dk2 = Tensor::zeros(k2.shape()), dv2 = Tensor::zeros(k2.shape());
  attention_backward(q, k1, v1, o, lse, dout, s, c().causal, c().q_offset, c().k_offset, dq, dk1,
                     dv1);
  attention_backward(q, k2, v2, o, lse, dout, s, c().causal, c().q_offset, c().k_offset + split, dq,
                     dk2, dv2);
  EXPECT_TENSORS_CLOSE(dq, dq_all, 1e-5);
  EXPECT_TENSORS_CLOSE(dk1, slice_time(dk_all, 0, split), 1e-5);
  EXPECT_TENSORS_CLOSE(dk2, slice_time(dk_all, split, c().tk), 1e-5);
  EXPECT_TENSORS_CLOSE(dv1, slice_time(dv_all, 0, split), 1e-5);
  EXPECT_TENSORS_CLOSE(dv2, slice_time(dv_all, split, c().tk), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionCases,
    ::testing::Values(
        // {B, Tq, Tk, H, Hkv, d, causal, q_offset, k_offset}
        Case{2, 5, 5, 4, 2, 3, true, 0, 0},       // plain causal, GQA 2:1
        Case{1, 4, 9, 4, 1, 5, true, 5, 0},       // causal, queries at the bottom right, MQA
        Case{2, 6, 7, 2, 2, 4, true, 0, 2},       // keys start later: rows 0-1 see no key
        Case{1, 3, 8, 4, 2, 2, true, 10, 20},     // every row sees no key
        Case{2, 5, 6, 3, 3, 3, false, 0, 0},      // non-causal, Tq != Tk
        Case{1, 70, 75, 2, 1, 3, true, 3, 0},     // more than one query block
        Case{1, 67, 67, 2, 2, 4, false, 0, 0}));  // several blocks, non-causal

TEST(Attention, MergeWithEmptyBlockKeepsRunningResult) {
  const Shape o_shape = {1, 2, 1, 3};
  Tensor o = random_tensor(o_shape, 1);
  const Tensor o_before = o.clone();
  Tensor lse = Tensor::from_floats({0.5f, -1.0f}, {1, 1, 2});
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor o_b = Tensor::zeros(o_shape);
  const Tensor lse_b = Tensor::from_floats({-inf, -inf}, {1, 1, 2});
  attention_merge(o, lse, o_b, lse_b);
  EXPECT_TENSORS_CLOSE(o, o_before, 0.0);
  EXPECT_TENSORS_CLOSE(lse, Tensor::from_floats({0.5f, -1.0f}, {1, 1, 2}), 0.0);
}

TEST(AttentionDeathTest, RejectsHeadsNotDivisibleByKvHeads) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  const Tensor q = Tensor::zeros({1, 2, 3, 4});
  const Tensor k = Tensor::zeros({1, 2, 2, 4});
  Tensor o = Tensor::zeros({1, 2, 3, 4});
  Tensor lse = Tensor::zeros({1, 3, 2});
  EXPECT_DEATH(attention_forward(q, k, k, 1.0f, true, 0, 0, o, lse), "H % Hkv == 0");
}

}  // namespace
}  // namespace weft::kernels
