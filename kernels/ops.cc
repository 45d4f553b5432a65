// Shape, dtype and device checks for every kernel, then dispatch to kernels/cpu or kernels/cuda
// (kernels/ops_check.h). Activations given as [..., D] are passed on as 2-D views [N, D] where
// ops.h says [N, D]. The GEMMs and linears, with the numerics modes, are in ops_dense.cc.
#include "kernels/ops.h"

#include <string>

#include "kernels/ops_check.h"

namespace weft::kernels {

using detail::bf16_output;
using detail::Check;
using detail::rows_of;

namespace {

// Optional [B, H, d, d] state: undefined, or exactly that shape.
void check_state(const Check& c, const char* name, const Tensor& t, const Shape& want) {
  if (t.defined()) c.floating(name, t).shape(name, t, want);
}

}  // namespace

// ---- elementwise ----

void add(const Tensor& a, const Tensor& b, Tensor& out) {
  const Check ck("add");
  const Device dev = ck.device({&a, &b, &out});
  ck.floating("a", a).floating("b", b).floating("out", out);
  ck.shape("b", b, a.shape()).shape("out", out, a.shape());
  WEFT_DISPATCH(dev, add, a, b, out);
}

void add_(Tensor& a, const Tensor& b, float alpha) {
  const Check ck("add_");
  const Device dev = ck.device({&a, &b});
  ck.floating("a", a).floating("b", b).shape("b", b, a.shape());
  WEFT_DISPATCH(dev, add_, a, b, alpha);
}

void mul_add_(Tensor& a, const Tensor& b, const Tensor& c) {
  const Check ck("mul_add_");
  const Device dev = ck.device({&a, &b, &c});
  ck.floating("a", a).floating("b", b).floating("c", c);
  ck.shape("b", b, a.shape()).shape("c", c, a.shape());
  WEFT_DISPATCH(dev, mul_add_, a, b, c);
}

void scale_(Tensor& a, float alpha) {
  const Check ck("scale_");
  const Device dev = ck.device({&a});
  ck.floating("a", a);
  WEFT_DISPATCH(dev, scale_, a, alpha);
}

void fill_(Tensor& a, float value) {
  const Check ck("fill_");
  const Device dev = ck.device({&a});
  ck.floating("a", a);
  WEFT_DISPATCH(dev, fill_, a, value);
}

double sum_squares(const Tensor& a) {
  const Check ck("sum_squares");
  const Device dev = ck.device({&a});
  ck.floating("a", a);
  return WEFT_DISPATCH(dev, sum_squares, a);
}

// ---- normalisation ----

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y, Tensor& rstd) {
  const Check ck("rmsnorm_forward");
  const Device dev = ck.device({&x, &w, &y, &rstd});
  ck.floating("x", x).ndim("w", w, 1).floating("w", w).floating("y", y).f32("rstd", rstd);
  ck.that(x.ndim() >= 1 && x.dim(-1) == w.dim(0),
          "x is " + shape_str(x.shape()) + ", w is " + shape_str(w.shape()));
  ck.shape("y", y, x.shape()).numel("rstd", rstd, x.numel() / w.dim(0));
  Tensor x2 = rows_of(x);
  Tensor y2 = rows_of(y);
  Tensor rstd1 = rstd.view({-1});
  WEFT_DISPATCH(dev, rmsnorm_forward, x2, w, eps, y2, rstd1);
}

void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy,
                      Tensor& dx, Tensor& dw) {
  const Check ck("rmsnorm_backward");
  const Device dev = ck.device({&x, &w, &rstd, &dy, &dx, &dw});
  ck.floating("x", x).ndim("w", w, 1).floating("w", w).f32("rstd", rstd);
  ck.floating("dy", dy).floating("dx", dx).floating("dw", dw);
  ck.that(x.ndim() >= 1 && x.dim(-1) == w.dim(0),
          "x is " + shape_str(x.shape()) + ", w is " + shape_str(w.shape()));
  ck.numel("rstd", rstd, x.numel() / w.dim(0));
  ck.shape("dy", dy, x.shape()).shape("dx", dx, x.shape()).shape("dw", dw, w.shape());
  const Tensor x2 = rows_of(x);
  const Tensor dy2 = rows_of(dy);
  const Tensor rstd1 = rstd.view({-1});
  Tensor dx2 = rows_of(dx);
  WEFT_DISPATCH(dev, rmsnorm_backward, x2, w, rstd1, dy2, dx2, dw);
}

// ---- rotary embedding ----

namespace {
void check_rope(const Check& ck, const Tensor& x, const Tensor& positions, const Tensor& inv_freq) {
  ck.floating("x", x).ndim("x", x, 4).index("positions", positions).f32("inv_freq", inv_freq);
  ck.that(x.dim(3) % 2 == 0, "head dim of x " + shape_str(x.shape()) + " is odd");
  ck.numel("positions", positions, x.dim(1));
  const int64_t half = x.dim(3) / 2;
  ck.that(inv_freq.shape() == Shape{half} || inv_freq.shape() == Shape{x.dim(1), half},
          "inv_freq is " + shape_str(inv_freq.shape()) + ", expected [d/2] or [T, d/2] for x " +
              shape_str(x.shape()));
}
}  // namespace

void rope_forward(Tensor& x, const Tensor& positions, const Tensor& inv_freq,
                  float attention_factor) {
  const Check ck("rope_forward");
  const Device dev = ck.device({&x, &positions, &inv_freq});
  check_rope(ck, x, positions, inv_freq);
  WEFT_DISPATCH(dev, rope_forward, x, positions, inv_freq, attention_factor);
}

void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& inv_freq,
                   float attention_factor) {
  const Check ck("rope_backward");
  const Device dev = ck.device({&dx, &positions, &inv_freq});
  check_rope(ck, dx, positions, inv_freq);
  WEFT_DISPATCH(dev, rope_backward, dx, positions, inv_freq, attention_factor);
}

// ---- softmax attention ----

namespace {
// q [B,Tq,H,d], k and v [B,Tk,Hkv,d] with H % Hkv == 0.
void check_qkv(const Check& ck, const Tensor& q, const Tensor& k, const Tensor& v) {
  ck.floating("q", q).ndim("q", q, 4).floating("k", k).ndim("k", k, 4).floating("v", v);
  ck.shape("v", v, k.shape());
  ck.that(k.dim(0) == q.dim(0) && k.dim(3) == q.dim(3) && k.dim(2) > 0 && q.dim(2) % k.dim(2) == 0,
          "q is " + shape_str(q.shape()) + ", k is " + shape_str(k.shape()) +
              "; expected [B,Tq,H,d] and [B,Tk,Hkv,d] with H % Hkv == 0");
}
Shape lse_shape(const Tensor& q) { return {q.dim(0), q.dim(2), q.dim(1)}; }
}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale, bool causal,
                       int64_t q_offset, int64_t k_offset, Tensor& o, Tensor& lse) {
  const Check ck("attention_forward");
  const Device dev = ck.device({&q, &k, &v, &o, &lse});
  check_qkv(ck, q, k, v);
  ck.floating("o", o).shape("o", o, q.shape()).f32("lse", lse).shape("lse", lse, lse_shape(q));
  WEFT_DISPATCH(dev, attention_forward, q, k, v, scale, causal, q_offset, k_offset, o, lse);
}

void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                        const Tensor& lse, const Tensor& dout, float scale, bool causal,
                        int64_t q_offset, int64_t k_offset, Tensor& dq, Tensor& dk, Tensor& dv) {
  const Check ck("attention_backward");
  const Device dev = ck.device({&q, &k, &v, &o, &lse, &dout, &dq, &dk, &dv});
  check_qkv(ck, q, k, v);
  ck.floating("o", o).shape("o", o, q.shape()).f32("lse", lse).shape("lse", lse, lse_shape(q));
  ck.floating("dout", dout).shape("dout", dout, q.shape());
  ck.floating("dq", dq).shape("dq", dq, q.shape());
  ck.floating("dk", dk).shape("dk", dk, k.shape()).floating("dv", dv).shape("dv", dv, k.shape());
  WEFT_DISPATCH(dev, attention_backward, q, k, v, o, lse, dout, scale, causal, q_offset, k_offset,
                dq, dk, dv);
}

void attention_merge(Tensor& o, Tensor& lse, const Tensor& o_b, const Tensor& lse_b) {
  const Check ck("attention_merge");
  const Device dev = ck.device({&o, &lse, &o_b, &lse_b});
  ck.floating("o", o).ndim("o", o, 4).f32("lse", lse).shape("lse", lse, lse_shape(o));
  ck.floating("o_b", o_b).shape("o_b", o_b, o.shape()).f32("lse_b", lse_b);
  ck.shape("lse_b", lse_b, lse.shape());
  WEFT_DISPATCH(dev, attention_merge, o, lse, o_b, lse_b);
}

// ---- linear attention ----

namespace {
Shape state_shape(const Tensor& q) { return {q.dim(0), q.dim(2), q.dim(3), q.dim(3)}; }
void check_linear(const Check& ck, const Tensor& q, const Tensor& k, const Tensor& v,
                  const std::vector<float>& gamma, const Tensor& s_in, int64_t chunk) {
  check_qkv(ck, q, k, v);
  ck.that(k.dim(1) == q.dim(1),
          "q is " + shape_str(q.shape()) + ", k is " + shape_str(k.shape()) + ": lengths differ");
  ck.that(static_cast<int64_t>(gamma.size()) == q.dim(2),
          std::to_string(gamma.size()) + " decays for " + std::to_string(q.dim(2)) + " heads");
  ck.that(chunk >= 1, "chunk " + std::to_string(chunk) + " < 1");
  check_state(ck, "s_in", s_in, state_shape(q));
}
}  // namespace

namespace {

// k_cache, v_cache [num_blocks, block_size, Hkv, d], alike.
void check_cache(const Check& ck, const Tensor& k_cache, const Tensor& v_cache) {
  ck.floating("k_cache", k_cache).ndim("k_cache", k_cache, 4);
  ck.floating("v_cache", v_cache).shape("v_cache", v_cache, k_cache.shape());
}

}  // namespace

void kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& slots, Tensor& k_cache,
                    Tensor& v_cache) {
  const Check ck("kv_cache_write");
  const Device dev = ck.device({&k, &v, &slots, &k_cache, &v_cache});
  check_cache(ck, k_cache, v_cache);
  const Shape& c = k_cache.shape();
  ck.floating("k", k).ndim("k", k, 3).that(k.dim(1) == c[2] && k.dim(2) == c[3],
                                           "k must be [N, Hkv, d] of the cache's Hkv and d");
  ck.floating("v", v)
      .shape("v", v, k.shape())
      .index("slots", slots)
      .numel("slots", slots, k.dim(0));
  WEFT_DISPATCH(dev, kv_cache_write, k, v, slots, k_cache, v_cache);
}

void paged_attention_forward(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                             const Tensor& block_tables, const Tensor& seq, const Tensor& pos,
                             float scale, Tensor& o) {
  const Check ck("paged_attention_forward");
  const Device dev = ck.device({&q, &k_cache, &v_cache, &block_tables, &seq, &pos, &o});
  check_cache(ck, k_cache, v_cache);
  ck.floating("q", q).ndim("q", q, 3).that(q.dim(2) == k_cache.dim(3),
                                           "q's head dim is the cache's");
  ck.that(q.dim(1) % k_cache.dim(2) == 0, "query heads must be a multiple of the KV heads");
  ck.index("block_tables", block_tables).ndim("block_tables", block_tables, 2);
  ck.index("seq", seq).numel("seq", seq, q.dim(0)).index("pos", pos).numel("pos", pos, q.dim(0));
  ck.floating("o", o).shape("o", o, q.shape());
  WEFT_DISPATCH(dev, paged_attention_forward, q, k_cache, v_cache, block_tables, seq, pos, scale,
                o);
}

void linear_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                              const std::vector<float>& gamma, float scale, const Tensor& s_in,
                              int64_t chunk, Tensor& o, Tensor& m_local) {
  const Check ck("linear_attention_forward");
  const Device dev = ck.device({&q, &k, &v, &s_in, &o, &m_local});
  check_linear(ck, q, k, v, gamma, s_in, chunk);
  ck.floating("o", o).shape("o", o, q.shape());
  ck.floating("m_local", m_local).shape("m_local", m_local, state_shape(q));
  WEFT_DISPATCH(dev, linear_attention_forward, q, k, v, gamma, scale, s_in, chunk, o, m_local);
}

void linear_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                               const std::vector<float>& gamma, float scale, const Tensor& s_in,
                               const Tensor& dout, const Tensor& ds_out, int64_t chunk, Tensor& dq,
                               Tensor& dk, Tensor& dv, Tensor& ds_in) {
  const Check ck("linear_attention_backward");
  const Device dev = ck.device({&q, &k, &v, &s_in, &dout, &ds_out, &dq, &dk, &dv, &ds_in});
  check_linear(ck, q, k, v, gamma, s_in, chunk);
  check_state(ck, "ds_out", ds_out, state_shape(q));
  ck.floating("dout", dout).shape("dout", dout, q.shape());
  ck.floating("dq", dq).shape("dq", dq, q.shape());
  ck.floating("dk", dk).shape("dk", dk, k.shape()).floating("dv", dv).shape("dv", dv, k.shape());
  ck.floating("ds_in", ds_in).shape("ds_in", ds_in, state_shape(q));
  WEFT_DISPATCH(dev, linear_attention_backward, q, k, v, gamma, scale, s_in, dout, ds_out, chunk,
                dq, dk, dv, ds_in);
}

// ---- MLP ----

void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& h) {
  const Check ck("swiglu_forward");
  const Device dev = ck.device({&gate, &up, &h});
  ck.floating("gate", gate).floating("up", up).floating("h", h);
  ck.shape("up", up, gate.shape()).shape("h", h, gate.shape());
  WEFT_DISPATCH(dev, swiglu_forward, gate, up, h);
}

void swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dh, Tensor& dgate,
                     Tensor& dup) {
  const Check ck("swiglu_backward");
  const Device dev = ck.device({&gate, &up, &dh, &dgate, &dup});
  ck.floating("gate", gate).floating("up", up).floating("dh", dh);
  ck.floating("dgate", dgate).floating("dup", dup);
  ck.shape("up", up, gate.shape()).shape("dh", dh, gate.shape());
  ck.shape("dgate", dgate, gate.shape()).shape("dup", dup, gate.shape());
  WEFT_DISPATCH(dev, swiglu_backward, gate, up, dh, dgate, dup);
}

// ---- embedding and loss ----

namespace {
// ids (any shape, N entries) against rows [N, D] given as [..., D].
void check_embedding(const Check& ck, const Tensor& ids, const Tensor& table, const Tensor& rows) {
  ck.index("ids", ids).floating("table", table).ndim("table", table, 2).floating("rows", rows);
  ck.that(rows.ndim() >= 1 && rows.dim(-1) == table.dim(1) &&
              rows.numel() == ids.numel() * table.dim(1),
          "ids " + shape_str(ids.shape()) + ", table " + shape_str(table.shape()) + ", rows " +
              shape_str(rows.shape()) + ": expected rows [N, D] for N ids");
}
void check_logits(const Check& ck, const Tensor& logits, const Tensor& targets) {
  ck.floating("logits", logits).ndim("logits", logits, 2).index("targets", targets);
  ck.numel("targets", targets, logits.dim(0));
}
}  // namespace

void embedding_forward(const Tensor& ids, const Tensor& table, int64_t vocab_start, Tensor& out) {
  const Check ck("embedding_forward");
  const Device dev = ck.device({&ids, &table, &out});
  check_embedding(ck, ids, table, out);
  WEFT_DISPATCH(dev, embedding_forward, ids, table, vocab_start, out);
  bf16_output(out);
}

void embedding_backward(const Tensor& ids, const Tensor& dout, int64_t vocab_start,
                        Tensor& dtable) {
  const Check ck("embedding_backward");
  const Device dev = ck.device({&ids, &dout, &dtable});
  check_embedding(ck, ids, dtable, dout);
  WEFT_DISPATCH(dev, embedding_backward, ids, dout, vocab_start, dtable);
}

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                           Tensor& lse, Tensor& target_logit) {
  const Check ck("cross_entropy_forward");
  const Device dev = ck.device({&logits, &targets, &lse, &target_logit});
  check_logits(ck, logits, targets);
  ck.floating("lse", lse).numel("lse", lse, logits.dim(0));
  ck.floating("target_logit", target_logit).numel("target_logit", target_logit, logits.dim(0));
  WEFT_DISPATCH(dev, cross_entropy_forward, logits, targets, vocab_start, lse, target_logit);
}

void cross_entropy_backward(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                            const Tensor& lse, const Tensor& row_scale, Tensor& dlogits) {
  const Check ck("cross_entropy_backward");
  const Device dev = ck.device({&logits, &targets, &lse, &row_scale, &dlogits});
  check_logits(ck, logits, targets);
  ck.floating("lse", lse).numel("lse", lse, logits.dim(0));
  ck.f32("row_scale", row_scale).numel("row_scale", row_scale, logits.dim(0));
  ck.floating("dlogits", dlogits).shape("dlogits", dlogits, logits.shape());
  WEFT_DISPATCH(dev, cross_entropy_backward, logits, targets, vocab_start, lse, row_scale, dlogits);
}

void softmax_forward(const Tensor& x, Tensor& y) {
  const Check ck("softmax_forward");
  const Device dev = ck.device({&x, &y});
  ck.floating("x", x).ndim("x", x, 2).floating("y", y).shape("y", y, x.shape());
  WEFT_DISPATCH(dev, softmax_forward, x, y);
}

void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  const Check ck("softmax_backward");
  const Device dev = ck.device({&y, &dy, &dx});
  ck.floating("y", y).ndim("y", y, 2).floating("dy", dy).shape("dy", dy, y.shape());
  ck.floating("dx", dx).shape("dx", dx, y.shape());
  WEFT_DISPATCH(dev, softmax_backward, y, dy, dx);
}

// ---- MoE routing ----

void topk_router_forward(const Tensor& logits, int k, bool renormalize, Tensor& probs, Tensor& idx,
                         Tensor& weights) {
  const Check ck("topk_router_forward");
  const Device dev = ck.device({&logits, &probs, &idx, &weights});
  ck.floating("logits", logits).ndim("logits", logits, 2);
  ck.that(k >= 1 && k <= logits.dim(1),
          "k " + std::to_string(k) + " outside [1, " + std::to_string(logits.dim(1)) + "] experts");
  ck.floating("probs", probs).shape("probs", probs, logits.shape());
  ck.shape("idx", idx, {logits.dim(0), k}).that(idx.dtype() == DType::kI32, "idx must be i32");
  ck.floating("weights", weights).shape("weights", weights, {logits.dim(0), k});
  WEFT_DISPATCH(dev, topk_router_forward, logits, k, renormalize, probs, idx, weights);
}

void topk_router_backward(const Tensor& probs, const Tensor& idx, const Tensor& weights,
                          const Tensor& dweights, bool renormalize, Tensor& dlogits) {
  const Check ck("topk_router_backward");
  const Device dev = ck.device({&probs, &idx, &weights, &dweights, &dlogits});
  ck.floating("probs", probs).ndim("probs", probs, 2).ndim("idx", idx, 2);
  ck.that(idx.dtype() == DType::kI32, "idx must be i32");
  const Shape topk = {probs.dim(0), idx.dim(1)};
  ck.shape("idx", idx, topk).floating("weights", weights).shape("weights", weights, topk);
  ck.floating("dweights", dweights).shape("dweights", dweights, topk);
  ck.floating("dlogits", dlogits).shape("dlogits", dlogits, probs.shape());
  WEFT_DISPATCH(dev, topk_router_backward, probs, idx, weights, dweights, renormalize, dlogits);
}

// ---- optimizer ----

void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& cfg,
                int64_t step) {
  const Check ck("adamw_step");
  const Device dev = ck.device({&param, &grad, &m, &v});
  ck.f32("param", param).f32("grad", grad).f32("m", m).f32("v", v);
  ck.shape("grad", grad, param.shape()).shape("m", m, param.shape()).shape("v", v, param.shape());
  ck.that(step >= 1, "step " + std::to_string(step) + " < 1 (steps count from 1)");
  WEFT_DISPATCH(dev, adamw_step, param, grad, m, v, cfg, step);
}

}  // namespace weft::kernels
