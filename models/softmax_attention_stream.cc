// StreamBP's chunk-wise backward of softmax attention (docs/algorithms.md "StreamBP"): the keys
// and values of all T positions are projected once per layer and kept, with their gradients, for
// the layer's backward; a chunk of positions [a, e) projects its own queries, attends to keys
// [0, e) with the causal mask aligned at the bottom right (query a + i sees keys <= a + i), and
// back-propagates into dq of its rows and dk, dv of rows [0, e). The key/value projections'
// backward runs once, at the end.
#include <utility>

#include "kernels/ops.h"
#include "models/position_rows.h"
#include "models/softmax_attention.h"

namespace weft::models {

struct SoftmaxAttention::Stream final : MixerStream {
  TokenBatch batch;
  Tensor x;       // [N, D] the layer's normed input
  Tensor k, v;    // [B, T, Hkv, d], k after RoPE
  Tensor dk, dv;  // their gradients, gathered over the chunks
  Tensor dx;      // [N, D] the input gradient, gathered over the chunks
};

struct SoftmaxAttention::ChunkSaved final : LayerSaved {
  int64_t a = 0, e = 0;  // the chunk's positions
  TokenBatch batch;      // B sequences of e - a positions from a
  Tensor x;              // [B*(e-a), D]
  Tensor q, o;           // [B, e-a, H, d], q after RoPE
  Tensor lse;            // [B, H, e-a]
};

namespace {

// Sequence b's rows [0, e) of t [B, T, Hkv, d], as [1, e, Hkv, d] (a view: writes go through).
Tensor prefix(const Tensor& t, int64_t b, int64_t e) {
  const Shape& s = t.shape();
  return t.slice(b, b + 1).view({s[1], s[2], s[3]}).slice(0, e).view({1, e, s[2], s[3]});
}

}  // namespace

std::unique_ptr<MixerStream> SoftmaxAttention::stream_begin(const TokenBatch& batch,
                                                            const Tensor& x, int64_t chunk) const {
  (void)chunk;  // any chunking of the queries sees the same keys
  auto st = std::make_unique<Stream>();
  st->batch = batch;
  st->x = x;
  QkvHeads kv = proj_.project_kv(batch, x);
  kernels::rope_forward(kv.k, batch.positions, rope_theta_);
  st->k = std::move(kv.k);
  st->v = std::move(kv.v);
  st->dk = Tensor::zeros(st->k.shape(), DType::kF32, st->k.device());
  st->dv = Tensor::zeros(st->v.shape(), DType::kF32, st->v.device());
  st->dx = Tensor::zeros(x.shape(), DType::kF32, x.device());
  return st;
}

Tensor SoftmaxAttention::stream_forward(MixerStream& stream, int64_t a, int64_t e,
                                        SavedPtr* saved) const {
  auto& st = static_cast<Stream&>(stream);
  const int64_t b_count = st.batch.batch, c = e - a;
  auto cs = std::make_unique<ChunkSaved>();
  cs->a = a;
  cs->e = e;
  cs->batch = TokenBatch::make(b_count, c, a);
  cs->x = position_rows(st.x, b_count, st.batch.len, a, e);
  cs->q = proj_.project_q(cs->batch, cs->x);
  kernels::rope_forward(cs->q, cs->batch.positions, rope_theta_);
  cs->o = Tensor::empty(cs->q.shape(), DType::kF32, cs->q.device());
  cs->lse = Tensor::empty({b_count, proj_.heads(), c}, DType::kF32, cs->q.device());
  for (int64_t b = 0; b < b_count; ++b) {
    Tensor o_b = cs->o.slice(b, b + 1);
    Tensor lse_b = cs->lse.slice(b, b + 1);
    kernels::attention_forward(cs->q.slice(b, b + 1), prefix(st.k, b, e), prefix(st.v, b, e),
                               scale_, /*causal=*/true, a, 0, o_b, lse_b);
  }
  Tensor y = proj_.project_out(cs->o);
  *saved = std::move(cs);
  return y;
}

void SoftmaxAttention::stream_backward(MixerStream& stream, LayerSaved& saved, const Tensor& dy) {
  auto& st = static_cast<Stream&>(stream);
  auto& cs = static_cast<ChunkSaved&>(saved);
  const Tensor d_o = proj_.backward_out(cs.o, dy);  // [B, c, H, d]
  Tensor dq = Tensor::zeros(cs.q.shape(), DType::kF32, cs.q.device());
  for (int64_t b = 0; b < cs.batch.batch; ++b) {
    Tensor dq_b = dq.slice(b, b + 1);
    Tensor dk_b = prefix(st.dk, b, cs.e);
    Tensor dv_b = prefix(st.dv, b, cs.e);
    kernels::attention_backward(cs.q.slice(b, b + 1), prefix(st.k, b, cs.e), prefix(st.v, b, cs.e),
                                cs.o.slice(b, b + 1), cs.lse.slice(b, b + 1), d_o.slice(b, b + 1),
                                scale_,
                                /*causal=*/true, cs.a, 0, dq_b, dk_b, dv_b);
  }
  kernels::rope_backward(dq, cs.batch.positions, rope_theta_);
  Tensor dx = Tensor::zeros(cs.x.shape(), DType::kF32, cs.x.device());
  proj_.backward_q(cs.x, dq, dx);
  add_position_rows(st.dx, st.batch.batch, st.batch.len, cs.a, cs.e, dx);
}

Tensor SoftmaxAttention::stream_end(MixerStream& stream) {
  auto& st = static_cast<Stream&>(stream);
  kernels::rope_backward(st.dk, st.batch.positions, rope_theta_);
  proj_.backward_kv(st.x, st.dk, st.dv, st.dx);
  return std::move(st.dx);
}

}  // namespace weft::models
