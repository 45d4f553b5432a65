// StreamBP's chunk-wise backward of decayed linear attention (docs/algorithms.md "StreamBP"): a
// chunk of positions [a, e) needs nothing of the earlier positions but the state S_a they leave
// (S_a = sum_{u<a} gamma^(a-1-u) k_u^T v_u). stream_begin runs the chunks once in order and keeps
// the state entering each; the chunks then back-propagate from the last to the first, each
// handing dS_a (the gradient of the state it read) to the chunk before as the gradient of that
// chunk's outgoing state, as the sequence-parallel cores do between ranks.
#include <utility>

#include "kernels/ops.h"
#include "models/linear_attention.h"
#include "models/position_rows.h"

namespace weft::models {

struct LinearAttention::Stream final : MixerStream {
  TokenBatch batch;
  Tensor x;                  // [N, D] the layer's normed input
  int64_t chunk = 0;         // positions per chunk
  std::vector<Tensor> s_in;  // [B, H, d, d] entering each chunk (empty: zero, the first)
  Tensor ds;                 // gradient of the state leaving the chunk being back-propagated
  Tensor dx;                 // [N, D] the input gradient, gathered over the chunks
};

struct LinearAttention::ChunkSaved final : LayerSaved {
  int64_t a = 0, e = 0;
  TokenBatch batch;  // B sequences of e - a positions from a
  Tensor x;          // [B*(e-a), D]
  QkvHeads qkv;
  Tensor o;  // [B, e-a, H, d]
};

std::unique_ptr<MixerStream> LinearAttention::stream_begin(const TokenBatch& batch, const Tensor& x,
                                                           int64_t chunk) const {
  auto st = std::make_unique<Stream>();
  st->batch = batch;
  st->x = x;
  st->chunk = chunk;
  const int64_t b_count = batch.batch, t = batch.len, d = proj_.head_dim();
  Tensor s;  // the state entering the next chunk
  for (int64_t a = 0; a < t; a += chunk) {
    const int64_t e = std::min(t, a + chunk);
    st->s_in.push_back(s);
    if (e == t) break;
    const TokenBatch cb = TokenBatch::make(b_count, e - a, a);
    const QkvHeads qkv = proj_.project_qkv(cb, position_rows(x, b_count, t, a, e));
    Tensor o = Tensor::empty(qkv.q.shape(), DType::kF32, x.device());
    Tensor m = Tensor::empty({b_count, proj_.heads(), d, d}, DType::kF32, x.device());
    kernels::linear_attention_forward(qkv.q, qkv.k, qkv.v, gamma_, scale_, s, kChunk, o, m);
    if (s.defined()) {
      s = s.clone();
      carry_state(e - a, m, s);
    } else {
      s = std::move(m);
    }
  }
  st->dx = Tensor::zeros(x.shape(), DType::kF32, x.device());
  return st;
}

Tensor LinearAttention::stream_forward(MixerStream& stream, int64_t a, int64_t e,
                                       SavedPtr* saved) const {
  auto& st = static_cast<Stream&>(stream);
  WEFT_CHECK(a % st.chunk == 0 && a / st.chunk < static_cast<int64_t>(st.s_in.size()))
      << "chunk [" << a << ", " << e << ") is not one of stream_begin's";
  const int64_t b_count = st.batch.batch, d = proj_.head_dim();
  auto cs = std::make_unique<ChunkSaved>();
  cs->a = a;
  cs->e = e;
  cs->batch = TokenBatch::make(b_count, e - a, a);
  cs->x = position_rows(st.x, b_count, st.batch.len, a, e);
  cs->qkv = proj_.project_qkv(cs->batch, cs->x);
  cs->o = Tensor::empty(cs->qkv.q.shape(), DType::kF32, cs->x.device());
  Tensor m = Tensor::empty({b_count, proj_.heads(), d, d}, DType::kF32, cs->x.device());
  kernels::linear_attention_forward(cs->qkv.q, cs->qkv.k, cs->qkv.v, gamma_, scale_,
                                    st.s_in[a / st.chunk], kChunk, cs->o, m);
  Tensor y = proj_.project_out(cs->o);
  *saved = std::move(cs);
  return y;
}

void LinearAttention::stream_backward(MixerStream& stream, LayerSaved& saved, const Tensor& dy) {
  auto& st = static_cast<Stream&>(stream);
  auto& cs = static_cast<ChunkSaved&>(saved);
  const int64_t i = cs.a / st.chunk, d = proj_.head_dim();
  const Tensor d_o = proj_.backward_out(cs.o, dy);
  QkvHeads grads = proj_.zero_grads(cs.batch);
  Tensor ds_in = Tensor::empty({cs.batch.batch, proj_.heads(), d, d}, DType::kF32, dy.device());
  kernels::linear_attention_backward(cs.qkv.q, cs.qkv.k, cs.qkv.v, gamma_, scale_, st.s_in[i], d_o,
                                     st.ds, kChunk, grads.q, grads.k, grads.v, ds_in);
  st.ds = std::move(ds_in);
  st.s_in[i] = Tensor();
  add_position_rows(st.dx, st.batch.batch, st.batch.len, cs.a, cs.e,
                    proj_.backward_qkv(cs.x, grads));
}

Tensor LinearAttention::stream_end(MixerStream& stream) {
  return std::move(static_cast<Stream&>(stream).dx);
}

}  // namespace weft::models
