// Chunked linear attention against the quadratic formula
//   o_t = scale sum_{u<=t} g^(t-u) (q_t.k_u) v_u + scale g^(t+1) q_t S_in,
// its carried state (two halves == the whole), and its backward (dq, dk, dv, ds_in) against
// central differences of the formula in double.
#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/numeric_grad.h"
#include "tests/support/test_util.h"

namespace weft::kernels {
namespace {

using testing::numeric_grad;
using testing::random_tensor;

struct Case {
  int64_t batch, seq, heads, kv_heads, d, chunk;
};

std::vector<double> as_doubles(const Tensor& t) {
  const std::vector<float> f = t.to_floats();
  return {f.begin(), f.end()};
}

Tensor as_tensor(const std::vector<double>& v, const Shape& shape) {
  return Tensor::from_floats(std::vector<float>(v.begin(), v.end()), shape);
}

// Decays far enough apart that chunk boundaries matter over a few positions.
std::vector<float> decays(int64_t heads) {
  std::vector<float> g(heads);
  for (int64_t h = 0; h < heads; ++h) g[h] = 1.0f - std::pow(2.0f, -1.0f - h);
  return g;
}

// The formula in double: returns o [B,T,H,d] followed by S_out [B,H,d,d] = g^T S_in + M, and
// fills m [B,H,d,d] when non-null.
std::vector<double> reference(const Case& c, const std::vector<float>& gamma, double scale,
                              const std::vector<double>& q, const std::vector<double>& k,
                              const std::vector<double>& v, const std::vector<double>& s_in,
                              std::vector<double>* m = nullptr) {
  const int64_t d = c.d;
  const int64_t group = c.heads / c.kv_heads;
  const int64_t o_size = c.batch * c.seq * c.heads * d;
  std::vector<double> out(o_size + c.batch * c.heads * d * d, 0.0);
  if (m != nullptr) m->assign(c.batch * c.heads * d * d, 0.0);
  auto qv = [&](int64_t b, int64_t t, int64_t h) {
    return &q[((b * c.seq + t) * c.heads + h) * d];
  };
  auto kv = [&](const std::vector<double>& x, int64_t b, int64_t t, int64_t h) {
    return &x[((b * c.seq + t) * c.kv_heads + h / group) * d];
  };
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t h = 0; h < c.heads; ++h) {
      const double g = gamma[h];
      const double* sin = &s_in[(b * c.heads + h) * d * d];
      for (int64_t t = 0; t < c.seq; ++t) {
        double* o = &out[((b * c.seq + t) * c.heads + h) * d];
        for (int64_t u = 0; u <= t; ++u) {
          double qk = 0;
          for (int64_t x = 0; x < d; ++x) qk += qv(b, t, h)[x] * kv(k, b, u, h)[x];
          for (int64_t e = 0; e < d; ++e) {
            o[e] += scale * std::pow(g, t - u) * qk * kv(v, b, u, h)[e];
          }
        }
        for (int64_t x = 0; x < d; ++x) {
          for (int64_t e = 0; e < d; ++e) {
            o[e] += scale * std::pow(g, t + 1) * qv(b, t, h)[x] * sin[x * d + e];
          }
        }
      }
      double* s_out = &out[o_size + (b * c.heads + h) * d * d];
      for (int64_t x = 0; x < d; ++x) {
        for (int64_t e = 0; e < d; ++e) {
          double mxe = 0;
          for (int64_t j = 0; j < c.seq; ++j) {
            mxe += std::pow(g, c.seq - 1 - j) * kv(k, b, j, h)[x] * kv(v, b, j, h)[e];
          }
          s_out[x * d + e] = std::pow(g, c.seq) * sin[x * d + e] + mxe;
          if (m != nullptr) (*m)[(b * c.heads + h) * d * d + x * d + e] = mxe;
        }
      }
    }
  }
  return out;
}

// [B, T, ...] -> positions [begin, end) of dim 1.
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

class LinearAttentionCases : public ::testing::TestWithParam<Case> {
 protected:
  const Case& c() const { return GetParam(); }
  Shape q_shape() const { return {c().batch, c().seq, c().heads, c().d}; }
  Shape k_shape() const { return {c().batch, c().seq, c().kv_heads, c().d}; }
  Shape s_shape() const { return {c().batch, c().heads, c().d, c().d}; }
  float scale() const { return 1.0f / std::sqrt(static_cast<float>(c().d)); }
  int64_t o_size() const { return shape_numel(q_shape()); }
};

TEST_P(LinearAttentionCases, ChunkedForwardMatchesQuadraticFormula) {
  const Tensor q = random_tensor(q_shape(), 1);
  const Tensor k = random_tensor(k_shape(), 2);
  const Tensor v = random_tensor(k_shape(), 3);
  const Tensor s_in = random_tensor(s_shape(), 4);
  const std::vector<float> gamma = decays(c().heads);
  Tensor o = Tensor::full(q_shape(), 5.0f);  // stale values must be overwritten
  Tensor m = Tensor::full(s_shape(), 5.0f);
  linear_attention_forward(q, k, v, gamma, scale(), s_in, c().chunk, o, m);
  std::vector<double> want_m;
  std::vector<double> want = reference(c(), gamma, scale(), as_doubles(q), as_doubles(k),
                                       as_doubles(v), as_doubles(s_in), &want_m);
  want.resize(o_size());
  EXPECT_TENSORS_CLOSE(o, as_tensor(want, q_shape()), 1e-5);
  EXPECT_TENSORS_CLOSE(m, as_tensor(want_m, s_shape()), 1e-5);

  // An undefined s_in is a zero state.
  Tensor o_none = Tensor::empty(q_shape());
  Tensor o_zero = Tensor::empty(q_shape());
  linear_attention_forward(q, k, v, gamma, scale(), Tensor(), c().chunk, o_none, m);
  linear_attention_forward(q, k, v, gamma, scale(), Tensor::zeros(s_shape()), c().chunk, o_zero, m);
  EXPECT_TENSORS_CLOSE(o_none, o_zero, 0.0);
}

// Running [0, T1) with S_in, then [T1, T) with s_in = g^T1 S_in + M_first, equals the whole run.
TEST_P(LinearAttentionCases, TwoHalvesWithCarriedStateMatchWhole) {
  const Tensor q = random_tensor(q_shape(), 5);
  const Tensor k = random_tensor(k_shape(), 6);
  const Tensor v = random_tensor(k_shape(), 7);
  const Tensor s_in = random_tensor(s_shape(), 8);
  const std::vector<float> gamma = decays(c().heads);
  const int64_t t1 = c().seq / 2;
  Tensor o = Tensor::empty(q_shape());
  Tensor m = Tensor::empty(s_shape());
  linear_attention_forward(q, k, v, gamma, scale(), s_in, c().chunk, o, m);

  const Shape q1 = {c().batch, t1, c().heads, c().d};
  const Shape q2 = {c().batch, c().seq - t1, c().heads, c().d};
  Tensor o1 = Tensor::empty(q1), o2 = Tensor::empty(q2);
  Tensor m1 = Tensor::empty(s_shape()), m2 = Tensor::empty(s_shape());
  linear_attention_forward(slice_time(q, 0, t1), slice_time(k, 0, t1), slice_time(v, 0, t1), gamma,
                           scale(), s_in, c().chunk, o1, m1);
  // s_mid = g^T1 S_in + M1, per head
  Tensor s_mid = m1.clone();
  const std::vector<float> sv = s_in.to_floats();
  float* mid = s_mid.data<float>();
  const int64_t dd = c().d * c().d;
  for (int64_t i = 0; i < s_mid.numel(); ++i) {
    mid[i] += std::pow(gamma[(i / dd) % c().heads], static_cast<float>(t1)) * sv[i];
  }
  linear_attention_forward(slice_time(q, t1, c().seq), slice_time(k, t1, c().seq),
                           slice_time(v, t1, c().seq), gamma, scale(), s_mid, c().chunk, o2, m2);
  EXPECT_TENSORS_CLOSE(o1, slice_time(o, 0, t1), 1e-5);
  EXPECT_TENSORS_CLOSE(o2, slice_time(o, t1, c().seq), 1e-5);
  // M of the whole = g^T2 M1 + M2.
  std::vector<float> m_joined = m2.to_floats();
  const std::vector<float> m1v = m1.to_floats();
  for (size_t i = 0; i < m_joined.size(); ++i) {
    m_joined[i] += std::pow(gamma[(i / dd) % c().heads], static_cast<float>(c().seq - t1)) * m1v[i];
  }
  EXPECT_TENSORS_CLOSE(m, Tensor::from_floats(m_joined, s_shape()), 1e-5);
}

TEST_P(LinearAttentionCases, BackwardMatchesFiniteDifferences) {
  const Tensor q = random_tensor(q_shape(), 9);
  const Tensor k = random_tensor(k_shape(), 10);
  const Tensor v = random_tensor(k_shape(), 11);
  const Tensor s_in = random_tensor(s_shape(), 12);
  const Tensor dout = random_tensor(q_shape(), 13);
  const Tensor ds_out = random_tensor(s_shape(), 14);
  const std::vector<float> gamma = decays(c().heads);
  const Tensor dq0 = random_tensor(q_shape(), 15);
  const Tensor dk0 = random_tensor(k_shape(), 16);
  const Tensor dv0 = random_tensor(k_shape(), 17);
  Tensor dq = dq0.clone(), dk = dk0.clone(), dv = dv0.clone();
  Tensor ds_in = Tensor::full(s_shape(), 3.0f);
  linear_attention_backward(q, k, v, gamma, scale(), s_in, dout, ds_out, c().chunk, dq, dk, dv,
                            ds_in);

  const std::vector<double> qd = as_doubles(q), kd = as_doubles(k), vd = as_doubles(v);
  const std::vector<double> sd = as_doubles(s_in);
  std::vector<double> w = as_doubles(dout);
  const std::vector<double> wds = as_doubles(ds_out);
  w.insert(w.end(), wds.begin(), wds.end());
  const double s = scale();
  auto f = [&](const auto& qx, const auto& kx, const auto& vx, const auto& sx) {
    return reference(c(), gamma, s, qx, kx, vx, sx);
  };
  auto plus = [](const Tensor& start, const std::vector<double>& g) {
    std::vector<double> sum = as_doubles(start);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += g[i];
    return as_tensor(sum, start.shape());
  };
  const auto gq = numeric_grad([&](const auto& x) { return f(x, kd, vd, sd); }, qd, w);
  const auto gk = numeric_grad([&](const auto& x) { return f(qd, x, vd, sd); }, kd, w);
  const auto gv = numeric_grad([&](const auto& x) { return f(qd, kd, x, sd); }, vd, w);
  const auto gs = numeric_grad([&](const auto& x) { return f(qd, kd, vd, x); }, sd, w);
  EXPECT_TENSORS_CLOSE(dq, plus(dq0, gq), 2e-5);
  EXPECT_TENSORS_CLOSE(dk, plus(dk0, gk), 2e-5);
  EXPECT_TENSORS_CLOSE(dv, plus(dv0, gv), 2e-5);
  EXPECT_TENSORS_CLOSE(ds_in, as_tensor(gs, s_shape()), 2e-5);

  // An undefined ds_out is a zero gradient.
  Tensor a_dq = Tensor::zeros(q_shape()), a_dk = Tensor::zeros(k_shape());
  Tensor a_dv = Tensor::zeros(k_shape()), a_ds = Tensor::empty(s_shape());
  Tensor b_dq = Tensor::zeros(q_shape()), b_dk = Tensor::zeros(k_shape());
  Tensor b_dv = Tensor::zeros(k_shape()), b_ds = Tensor::empty(s_shape());
  linear_attention_backward(q, k, v, gamma, scale(), s_in, dout, Tensor(), c().chunk, a_dq, a_dk,
                            a_dv, a_ds);
  linear_attention_backward(q, k, v, gamma, scale(), s_in, dout, Tensor::zeros(s_shape()),
                            c().chunk, b_dq, b_dk, b_dv, b_ds);
  EXPECT_TENSORS_CLOSE(a_dq, b_dq, 0.0);
  EXPECT_TENSORS_CLOSE(a_dk, b_dk, 0.0);
  EXPECT_TENSORS_CLOSE(a_ds, b_ds, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearAttentionCases,
                         ::testing::Values(
                             // {B, T, H, Hkv, d, chunk}
                             Case{2, 10, 4, 2, 3, 1},    // one position per chunk
                             Case{2, 10, 4, 2, 3, 3},    // T not a multiple of the chunk
                             Case{1, 10, 4, 1, 4, 4},    // MQA
                             Case{1, 9, 2, 2, 3, 16},    // one chunk longer than T
                             Case{1, 37, 2, 1, 5, 8}));  // several chunks, odd head dim

}  // namespace
}  // namespace weft::kernels
