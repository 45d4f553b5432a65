// CUDA softmax attention (forward, backward from a given (o, lse), merge) and chunked linear
// attention against the CPU kernels on the same random inputs, in f32 and bf16 storage. Shapes
// cut tiles unevenly, use GQA, causal offsets (ring attention's blocks), rows that see no key,
// and head dims from 8 to 256 (the largest needs more than 48 KiB of shared memory).
#include <cmath>
#include <ostream>
#include <vector>

#include "kernels/ops.h"
#include "tests/gpu/gpu_test_util.h"

namespace weft::kernels {
namespace {

using testing::gpu_empty;
using testing::GpuPrecisionTest;
using testing::kBF16Precision;
using testing::kF32Precision;
using testing::on_gpu;
using testing::random_in;
using testing::rounded;
using testing::tensors_close;

// lse may hold -inf (a query that saw no key): the -inf entries must match exactly and the
// finite ones closely.
::testing::AssertionResult lse_close(const Tensor& actual, const Tensor& expected, double tol) {
  std::vector<float> a = actual.to_floats();
  std::vector<float> b = expected.to_floats();
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes differ";
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(a[i]) != std::isinf(b[i])) {
      return ::testing::AssertionFailure()
             << "entry " << i << ": " << a[i] << " vs expected " << b[i];
    }
    if (std::isinf(b[i])) a[i] = b[i] = 0.0f;
  }
  const Shape shape = {static_cast<int64_t>(a.size())};
  return tensors_close(Tensor::from_floats(a, shape), Tensor::from_floats(b, shape), tol);
}

struct AttentionCase {
  int64_t batch, tq, tk, heads, kv_heads, d;
  bool causal;
  int64_t q_offset, k_offset;
};

std::ostream& operator<<(std::ostream& os, const AttentionCase& c) {
  return os << "B" << c.batch << " Tq" << c.tq << " Tk" << c.tk << " H" << c.heads << " Hkv"
            << c.kv_heads << " d" << c.d << (c.causal ? " causal" : " full") << " q_offset "
            << c.q_offset << " k_offset " << c.k_offset;
}

const AttentionCase kAttentionCases[] = {
    {2, 37, 37, 4, 2, 64, true, 0, 0},    // GQA, partial tiles
    {1, 16, 70, 2, 2, 32, false, 0, 0},   // more keys than queries
    {1, 20, 45, 4, 1, 128, true, 40, 0},  // a later query block against earlier keys
    {1, 12, 12, 2, 1, 8, true, 0, 6},     // the first six queries see no key
    {1, 9, 33, 1, 1, 256, true, 20, 0},   // the largest head dim
    {1, 40, 10, 2, 1, 16, true, 10, 30},  // keys after most queries
};

using CudaAttention = GpuPrecisionTest;

TEST_P(CudaAttention, ForwardMatchesCpu) {
  for (const AttentionCase& c : kAttentionCases) {
    SCOPED_TRACE(::testing::Message() << c);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
    const Tensor q = random_in({c.batch, c.tq, c.heads, c.d}, 1, dtype());
    const Tensor k = random_in({c.batch, c.tk, c.kv_heads, c.d}, 2, dtype());
    const Tensor v = random_in({c.batch, c.tk, c.kv_heads, c.d}, 3, dtype());
    Tensor o = Tensor::empty(q.shape());
    Tensor lse = Tensor::empty({c.batch, c.heads, c.tq});
    attention_forward(q, k, v, scale, c.causal, c.q_offset, c.k_offset, o, lse);

    Tensor go = gpu_empty(q.shape(), dtype());
    Tensor glse = gpu_empty(lse.shape(), DType::kF32);
    attention_forward(on_gpu(q, dtype()), on_gpu(k, dtype()), on_gpu(v, dtype()), scale, c.causal,
                      c.q_offset, c.k_offset, go, glse);
    EXPECT_TRUE(tensors_close(go, o, tol()));
    EXPECT_TRUE(lse_close(glse, lse, kF32Precision.tol));
  }
}

TEST_P(CudaAttention, BackwardFromGivenOutputAddsLikeCpu) {
  for (const AttentionCase& c : kAttentionCases) {
    SCOPED_TRACE(::testing::Message() << c);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
    const Tensor q = random_in({c.batch, c.tq, c.heads, c.d}, 4, dtype());
    const Tensor k = random_in({c.batch, c.tk, c.kv_heads, c.d}, 5, dtype());
    const Tensor v = random_in({c.batch, c.tk, c.kv_heads, c.d}, 6, dtype());
    const Tensor dout = random_in(q.shape(), 7, dtype());
    Tensor o_full = Tensor::empty(q.shape());
    Tensor lse = Tensor::empty({c.batch, c.heads, c.tq});
    attention_forward(q, k, v, scale, c.causal, c.q_offset, c.k_offset, o_full, lse);
    const Tensor o = rounded(o_full, dtype());  // both backwards read the stored o
    const Tensor dq0 = random_in(q.shape(), 8, dtype());
    const Tensor dk0 = random_in(k.shape(), 9, dtype());
    const Tensor dv0 = random_in(v.shape(), 10, dtype());

    Tensor dq = dq0.clone();
    Tensor dk = dk0.clone();
    Tensor dv = dv0.clone();
    attention_backward(q, k, v, o, lse, dout, scale, c.causal, c.q_offset, c.k_offset, dq, dk, dv);

    Tensor gdq = on_gpu(dq0, dtype());
    Tensor gdk = on_gpu(dk0, dtype());
    Tensor gdv = on_gpu(dv0, dtype());
    attention_backward(on_gpu(q, dtype()), on_gpu(k, dtype()), on_gpu(v, dtype()),
                       on_gpu(o, dtype()), on_gpu(lse), on_gpu(dout, dtype()), scale, c.causal,
                       c.q_offset, c.k_offset, gdq, gdk, gdv);
    EXPECT_TRUE(tensors_close(gdq, dq, tol()));
    EXPECT_TRUE(tensors_close(gdk, dk, tol()));
    EXPECT_TRUE(tensors_close(gdv, dv, tol()));
  }
}

TEST_P(CudaAttention, MergeMatchesCpuIncludingEmptyBlocks) {
  const Shape o_shape = {2, 5, 3, 40};
  const Shape lse_shape = {2, 3, 5};
  Tensor o0 = random_in(o_shape, 11, dtype());
  const Tensor o_b = random_in(o_shape, 12, dtype());
  Tensor lse0 = random_in(lse_shape, 13, DType::kF32, -2.0f, 2.0f);
  Tensor lse_b = random_in(lse_shape, 14, DType::kF32, -2.0f, 2.0f);
  // Row 0: the block saw no key; row 1: the running result saw none (its o is zero); row 2: both.
  float* la = lse0.data<float>();
  float* lb = lse_b.data<float>();
  lb[0] = -INFINITY;
  la[1] = -INFINITY;
  la[2] = lb[2] = -INFINITY;
  float* op = o0.data<float>();
  for (int64_t t : {1, 2}) {
    for (int64_t c = 0; c < o_shape[3]; ++c) op[(t * o_shape[2]) * o_shape[3] + c] = 0.0f;
  }
  Tensor o = o0.clone();
  Tensor lse = lse0.clone();
  attention_merge(o, lse, o_b, lse_b);

  Tensor go = on_gpu(o0, dtype());
  Tensor glse = on_gpu(lse0);
  attention_merge(go, glse, on_gpu(o_b, dtype()), on_gpu(lse_b));
  EXPECT_TRUE(tensors_close(go, o, tol()));
  EXPECT_TRUE(lse_close(glse, lse, kF32Precision.tol));
}

INSTANTIATE_TEST_SUITE_P(Precisions, CudaAttention,
                         ::testing::Values(kF32Precision, kBF16Precision));

struct LinearCase {
  int64_t batch, seq, heads, kv_heads, d, chunk;
  bool with_states;  // s_in and ds_out defined
};

std::ostream& operator<<(std::ostream& os, const LinearCase& c) {
  return os << "B" << c.batch << " T" << c.seq << " H" << c.heads << " Hkv" << c.kv_heads << " d"
            << c.d << " chunk " << c.chunk << (c.with_states ? " with states" : " no states");
}

const LinearCase kLinearCases[] = {
    {2, 37, 4, 2, 16, 8, true},    // GQA, a partial last chunk
    {1, 50, 2, 2, 64, 64, false},  // a chunk longer than the GPU's cap (32)
    {1, 5, 1, 1, 128, 3, true},    // short sequence, large head dim
};

std::vector<float> decays(int64_t heads) {
  std::vector<float> g(heads);
  for (int64_t h = 0; h < heads; ++h) g[h] = 1.0f - std::pow(2.0f, -5.0f - h);
  return g;
}

using CudaLinearAttention = GpuPrecisionTest;

TEST_P(CudaLinearAttention, ForwardAndBackwardMatchCpu) {
  for (const LinearCase& c : kLinearCases) {
    SCOPED_TRACE(::testing::Message() << c);
    const std::vector<float> gamma = decays(c.heads);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
    const Shape q_shape = {c.batch, c.seq, c.heads, c.d};
    const Shape kv_shape = {c.batch, c.seq, c.kv_heads, c.d};
    const Shape state_shape = {c.batch, c.heads, c.d, c.d};
    const Tensor q = random_in(q_shape, 20, dtype());
    const Tensor k = random_in(kv_shape, 21, dtype());
    const Tensor v = random_in(kv_shape, 22, dtype());
    const Tensor dout = random_in(q_shape, 23, dtype());
    const Tensor s_in = c.with_states ? random_in(state_shape, 24, dtype()) : Tensor();
    const Tensor ds_out = c.with_states ? random_in(state_shape, 25, dtype()) : Tensor();
    const Tensor dq0 = random_in(q_shape, 26, dtype());
    const Tensor dk0 = random_in(kv_shape, 27, dtype());
    const Tensor dv0 = random_in(kv_shape, 28, dtype());
    auto gpu_or_undefined = [&](const Tensor& t) { return t.defined() ? on_gpu(t, dtype()) : t; };

    Tensor o = Tensor::empty(q_shape);
    Tensor m_local = Tensor::empty(state_shape);
    linear_attention_forward(q, k, v, gamma, scale, s_in, c.chunk, o, m_local);
    Tensor dq = dq0.clone();
    Tensor dk = dk0.clone();
    Tensor dv = dv0.clone();
    Tensor ds_in = Tensor::empty(state_shape);
    linear_attention_backward(q, k, v, gamma, scale, s_in, dout, ds_out, c.chunk, dq, dk, dv,
                              ds_in);

    const Tensor gq = on_gpu(q, dtype());
    const Tensor gk = on_gpu(k, dtype());
    const Tensor gv = on_gpu(v, dtype());
    const Tensor gs_in = gpu_or_undefined(s_in);
    Tensor go = gpu_empty(q_shape, dtype());
    Tensor gm_local = gpu_empty(state_shape, dtype());
    linear_attention_forward(gq, gk, gv, gamma, scale, gs_in, c.chunk, go, gm_local);
    Tensor gdq = on_gpu(dq0, dtype());
    Tensor gdk = on_gpu(dk0, dtype());
    Tensor gdv = on_gpu(dv0, dtype());
    Tensor gds_in = gpu_empty(state_shape, dtype());
    linear_attention_backward(gq, gk, gv, gamma, scale, gs_in, on_gpu(dout, dtype()),
                              gpu_or_undefined(ds_out), c.chunk, gdq, gdk, gdv, gds_in);

    EXPECT_TRUE(tensors_close(go, o, tol()));
    EXPECT_TRUE(tensors_close(gm_local, m_local, tol()));
    EXPECT_TRUE(tensors_close(gdq, dq, tol()));
    EXPECT_TRUE(tensors_close(gdk, dk, tol()));
    EXPECT_TRUE(tensors_close(gdv, dv, tol()));
    EXPECT_TRUE(tensors_close(gds_in, ds_in, tol()));
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, CudaLinearAttention,
                         ::testing::Values(kF32Precision, kBF16Precision));

}  // namespace
}  // namespace weft::kernels
