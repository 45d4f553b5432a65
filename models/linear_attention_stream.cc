// Decayed linear attention chunk by chunk of positions (docs/algorithms.md "StreamBP", "SeCO and
// SpaCO"). A chunk [a, e) needs nothing of the earlier positions but the state they leave,
// S_a = sum_{u<a} gamma^(a-1-u) k_u^T v_u. The stream keeps the state entering each chunk,
// filled as the chunks first run in order. The chunks then back-propagate from the last to the
// first, each handing the gradient of the state it read (dS_a) to the chunk before, as the
// gradient of that chunk's outgoing state (as the sequence-parallel cores do between ranks).
#include <utility>

#include "kernels/ops.h"
#include "models/linear_attention.h"
#include "models/position_rows.h"

namespace weft::models {

struct LinearAttention::Stream final : MixerStream {
  TokenBatch batch;
  int64_t chunk = 0;         // positions per chunk
  std::vector<Tensor> s_in;  // [B, H, d, d] entering each chunk (empty: zero, or not yet run)
  int64_t filled = 1;        // s_in[0, filled) are known (the first: zero)
  // The gradient of the state leaving the chunk to back-propagate next (empty: zero). SpaCO
  // scales it where a chunk reads it but hands it on unscaled, so the factor applies once.
  Tensor ds;
};

struct LinearAttention::ChunkSaved final : LayerSaved {
  int64_t a = 0, e = 0;
  TokenBatch batch;  // B sequences of e - a positions from a
  Tensor x;          // [B*(e-a), D]
  QkvHeads qkv;
  Tensor o;  // [B, e-a, H, d]
};

std::unique_ptr<MixerStream> LinearAttention::stream_begin(const TokenBatch& batch,
                                                           int64_t chunk) const {
  auto st = std::make_unique<Stream>();
  st->batch = batch;
  st->chunk = chunk;
  st->s_in.resize((batch.len + chunk - 1) / chunk);
  return st;
}

void LinearAttention::stream_prefill(MixerStream& stream, const Tensor& x) const {
  auto& st = static_cast<Stream&>(stream);
  const int64_t b_count = st.batch.batch, t = st.batch.len;
  for (int64_t a = 0; a + st.chunk < t; a += st.chunk) {  // the last chunk leaves no state needed
    const int64_t e = a + st.chunk;
    (void)stream_forward(stream, a, e, position_rows(x, b_count, t, a, e), nullptr);
  }
}

Tensor LinearAttention::stream_forward(MixerStream& stream, int64_t a, int64_t e, const Tensor& x,
                                       SavedPtr* saved) const {
  auto& st = static_cast<Stream&>(stream);
  const int64_t i = a / st.chunk, b_count = st.batch.batch, d = proj_.head_dim();
  WEFT_CHECK(a % st.chunk == 0 && i < st.filled)
      << "chunk [" << a << ", " << e << ") before its state";
  const TokenBatch rows = TokenBatch::make(b_count, e - a, a);
  QkvHeads qkv = proj_.project_qkv(rows, x);
  Tensor o = Tensor::empty(qkv.q.shape(), DType::kF32, x.device());
  Tensor m = Tensor::empty({b_count, proj_.heads(), d, d}, DType::kF32, x.device());
  kernels::linear_attention_forward(qkv.q, qkv.k, qkv.v, gamma_, scale_, st.s_in[i], kChunk, o, m);
  if (i + 1 == st.filled && i + 1 < static_cast<int64_t>(st.s_in.size())) {
    Tensor next = std::move(m);  // S_e = gamma^(e-a) S_a + M
    if (st.s_in[i].defined()) {
      Tensor carried = st.s_in[i].clone();
      carry_state(e - a, next, carried);
      next = std::move(carried);
    }
    st.s_in[i + 1] = std::move(next);
    st.filled = i + 2;
  }
  Tensor y = proj_.project_out(o);
  if (saved != nullptr) {
    auto cs = std::make_unique<ChunkSaved>();
    cs->a = a;
    cs->e = e;
    cs->batch = rows;
    cs->x = x;
    cs->qkv = std::move(qkv);
    cs->o = std::move(o);
    *saved = std::move(cs);
  }
  return y;
}

Tensor LinearAttention::stream_backward(MixerStream& stream, LayerSaved& saved, const Tensor& dy) {
  auto& st = static_cast<Stream&>(stream);
  auto& cs = static_cast<ChunkSaved&>(saved);
  const int64_t i = cs.a / st.chunk, d = proj_.head_dim();
  const Tensor d_o = proj_.backward_out(cs.o, dy);
  QkvHeads grads = proj_.zero_grads(cs.batch);
  Tensor ds_out = st.ds;
  if (ds_out.defined() && st.handover_scale != 1.0f) {
    ds_out = ds_out.clone();
    kernels::scale_(ds_out, st.handover_scale);
  }
  Tensor ds_in = Tensor::empty({cs.batch.batch, proj_.heads(), d, d}, DType::kF32, dy.device());
  kernels::linear_attention_backward(cs.qkv.q, cs.qkv.k, cs.qkv.v, gamma_, scale_, st.s_in[i], d_o,
                                     ds_out, kChunk, grads.q, grads.k, grads.v, ds_in);
  if (ds_out.defined() && st.handover_scale != 1.0f) {
    // ds_in holds gamma^c * scale * ds; hand on gamma^c * ds: add gamma^c (1 - scale) ds.
    Tensor rest = st.ds.clone();
    kernels::scale_(rest, 1.0f - st.handover_scale);
    Tensor zero = Tensor::zeros(rest.shape(), DType::kF32, rest.device());
    carry_state(cs.e - cs.a, zero, rest);
    kernels::add_(ds_in, rest);
  }
  st.ds = std::move(ds_in);
  st.s_in[i] = Tensor();
  return proj_.backward_qkv(cs.x, grads);
}

void LinearAttention::stream_skip(MixerStream& stream, int64_t a, int64_t e) const {
  // The state's gradient passes the skipped chunk by its decay alone: dS_a = gamma^(e-a) dS_e.
  auto& st = static_cast<Stream&>(stream);
  st.s_in[a / st.chunk] = Tensor();
  if (!st.ds.defined()) return;
  Tensor zero = Tensor::zeros(st.ds.shape(), DType::kF32, st.ds.device());
  carry_state(e - a, zero, st.ds);
}

}  // namespace weft::models
