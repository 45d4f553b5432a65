// Softmax attention chunk by chunk of positions (docs/algorithms.md "StreamBP", "SeCO and
// SpaCO"). The stream holds the keys and values of all T positions ([B, T, Hkv, d], filled
// chunk by chunk in order, or at once by stream_prefill) and their gradients. A chunk [a, e)
// projects its own queries and attends to keys [0, e) with the causal mask aligned at the bottom
// right (query a + i sees keys <= a + i). Its backward adds into dq of its rows and into dk, dv of
// rows [0, e); the chunks run last to first, so the chunk's own dk, dv rows are complete when its
// backward ends, and their projections' backward runs then, on the chunk's rows.
#include <utility>

#include "kernels/ops.h"
#include "models/position_rows.h"
#include "models/softmax_attention.h"

namespace weft::models {

struct SoftmaxAttention::Stream final : MixerStream {
  TokenBatch batch;
  Shape shape;         // [B, T, Hkv, d]
  Tensor k, v;         // k after RoPE
  Tensor dk, dv;       // their gradients, gathered over the chunks
  int64_t filled = 0;  // positions [0, filled) of k, v hold values

  // The buffers, on the device of the first input.
  void allocate(Device device) {
    if (!k.defined()) {
      k = Tensor::empty(shape, DType::kF32, device);
      v = Tensor::empty(shape, DType::kF32, device);
    }
    if (!dk.defined()) {
      dk = Tensor::zeros(shape, DType::kF32, device);
      dv = Tensor::zeros(shape, DType::kF32, device);
    }
  }
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

// t [B, T, Hkv, d] seen as rows b*T + position.
Tensor as_rows(const Tensor& t) {
  const Shape& s = t.shape();
  return t.view({s[0] * s[1], s[2] * s[3]});
}

// Positions [a, e) of every sequence of t [B, T, Hkv, d] -> [B, e-a, Hkv, d].
Tensor chunk_of(const Tensor& t, int64_t a, int64_t e) {
  const Shape& s = t.shape();
  return position_rows(as_rows(t), s[0], s[1], a, e).view({s[0], e - a, s[2], s[3]});
}

}  // namespace

std::unique_ptr<MixerStream> SoftmaxAttention::stream_begin(const TokenBatch& batch,
                                                            int64_t chunk) const {
  (void)chunk;  // any chunking of the queries sees the same keys
  auto st = std::make_unique<Stream>();
  st->batch = batch;
  st->shape = {batch.batch, batch.len, proj_.kv_heads(), proj_.head_dim()};
  return st;
}

void SoftmaxAttention::stream_prefill(MixerStream& stream, const Tensor& x) const {
  auto& st = static_cast<Stream&>(stream);
  QkvHeads kv = proj_.project_kv(st.batch, x);
  rope_.forward(kv.k, st.batch);
  st.k = std::move(kv.k);
  st.v = std::move(kv.v);
  st.filled = st.batch.len;
  st.allocate(x.device());
}

Tensor SoftmaxAttention::stream_forward(MixerStream& stream, int64_t a, int64_t e, const Tensor& x,
                                        SavedPtr* saved) const {
  auto& st = static_cast<Stream&>(stream);
  const int64_t b_count = st.batch.batch, t = st.batch.len, c = e - a;
  TokenBatch rows = TokenBatch::make(b_count, c, a);
  rows.seq_len = st.batch.rope_len();
  st.allocate(x.device());
  if (e > st.filled) {  // the chunk's keys and values, into the stream
    WEFT_CHECK_EQ(a, st.filled) << "chunks must first run in order";
    QkvHeads kv = proj_.project_kv(rows, x);
    rope_.forward(kv.k, rows);
    for (int64_t b = 0; b < b_count; ++b) {
      as_rows(st.k).slice(b * t + a, b * t + e).copy_from(as_rows(kv.k).slice(b * c, (b + 1) * c));
      as_rows(st.v).slice(b * t + a, b * t + e).copy_from(as_rows(kv.v).slice(b * c, (b + 1) * c));
    }
    st.filled = e;
  }
  Tensor q = proj_.project_q(rows, x);
  rope_.forward(q, rows);
  Tensor o = Tensor::empty(q.shape(), DType::kF32, x.device());
  Tensor lse = Tensor::empty({b_count, proj_.heads(), c}, DType::kF32, x.device());
  for (int64_t b = 0; b < b_count; ++b) {
    Tensor o_b = o.slice(b, b + 1);
    Tensor lse_b = lse.slice(b, b + 1);
    kernels::attention_forward(q.slice(b, b + 1), prefix(st.k, b, e), prefix(st.v, b, e), scale_,
                               /*causal=*/true, a, 0, o_b, lse_b);
  }
  Tensor y = proj_.project_out(o);
  if (saved != nullptr) {
    auto cs = std::make_unique<ChunkSaved>();
    cs->a = a;
    cs->e = e;
    cs->batch = rows;
    cs->x = x;
    cs->q = std::move(q);
    cs->o = std::move(o);
    cs->lse = std::move(lse);
    *saved = std::move(cs);
  }
  return y;
}

Tensor SoftmaxAttention::stream_backward(MixerStream& stream, LayerSaved& saved, const Tensor& dy) {
  auto& st = static_cast<Stream&>(stream);
  auto& cs = static_cast<ChunkSaved&>(saved);
  const int64_t b_count = cs.batch.batch, t = st.batch.len;
  if (st.handover_scale != 1.0f) {  // SpaCO: what later chunks left on this chunk's rows
    for (int64_t b = 0; b < b_count; ++b) {
      Tensor dk_rows = as_rows(st.dk).slice(b * t + cs.a, b * t + cs.e);
      Tensor dv_rows = as_rows(st.dv).slice(b * t + cs.a, b * t + cs.e);
      kernels::scale_(dk_rows, st.handover_scale);
      kernels::scale_(dv_rows, st.handover_scale);
    }
  }
  const Tensor d_o = proj_.backward_out(cs.o, dy);  // [B, e-a, H, d]
  Tensor dq = Tensor::zeros(cs.q.shape(), DType::kF32, dy.device());
  for (int64_t b = 0; b < b_count; ++b) {
    Tensor dq_b = dq.slice(b, b + 1);
    Tensor dk_b = prefix(st.dk, b, cs.e);
    Tensor dv_b = prefix(st.dv, b, cs.e);
    kernels::attention_backward(cs.q.slice(b, b + 1), prefix(st.k, b, cs.e), prefix(st.v, b, cs.e),
                                cs.o.slice(b, b + 1), cs.lse.slice(b, b + 1), d_o.slice(b, b + 1),
                                scale_,
                                /*causal=*/true, cs.a, 0, dq_b, dk_b, dv_b);
  }
  rope_.backward(dq, cs.batch);
  // Every later chunk has run: the gradients of this chunk's keys and values are complete.
  Tensor dk = chunk_of(st.dk, cs.a, cs.e);
  const Tensor dv = chunk_of(st.dv, cs.a, cs.e);
  rope_.backward(dk, cs.batch);
  Tensor dx = Tensor::zeros(cs.x.shape(), DType::kF32, dy.device());
  proj_.backward_q(cs.x, dq, dx);
  proj_.backward_kv(cs.x, dk, dv, dx);
  return dx;
}

void SoftmaxAttention::stream_skip(MixerStream& stream, int64_t a, int64_t e) const {
  // A skipped chunk's own key/value gradients go nowhere; earlier chunks keep theirs.
  (void)stream;
  (void)a;
  (void)e;
}

}  // namespace weft::models
