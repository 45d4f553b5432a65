// Shape, dtype and device checks for every kernel, then dispatch to kernels/cpu or kernels/cuda.
// Activations given as [..., D] are passed on as 2-D views [N, D] where ops.h says [N, D].
#include "kernels/ops.h"

#include <atomic>
#include <initializer_list>
#include <string>

#include "kernels/cpu/cpu_ops.h"
#ifdef WEFT_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/internal.h"
#endif

namespace weft::kernels {

namespace {

std::atomic<bool> g_batch_invariant{false};

// The checks of one call, named after the op so that every message says where it failed.
class Check {
 public:
  explicit Check(const char* op) : op_(op) {}

  // All defined tensors on one device; returns it. Undefined entries (optional inputs) are
  // skipped.
  Device device(std::initializer_list<const Tensor*> tensors) const {
    const Tensor* first = nullptr;
    for (const Tensor* t : tensors) {
      if (t == nullptr || !t->defined()) continue;
      if (first == nullptr) first = t;
      WEFT_CHECK(t->device() == first->device())
          << op_ << ": tensors on " << first->device().str() << " and " << t->device().str() << " ("
          << first->str() << ", " << t->str() << ")";
    }
    WEFT_CHECK(first != nullptr) << op_ << ": no defined tensor";
    return first->device();
  }

  // A floating tensor: f32 on CPU; f32 or bf16 on CUDA.
  const Check& floating(const char* name, const Tensor& t) const {
    defined(name, t);
    const bool ok = t.dtype() == DType::kF32 || (t.device().is_cuda() && t.dtype() == DType::kBF16);
    WEFT_CHECK(ok) << op_ << ": " << name << " is " << t.str()
                   << (t.is_cpu() ? ", expected f32 on CPU" : ", expected f32 or bf16");
    return *this;
  }
  const Check& f32(const char* name, const Tensor& t) const {
    defined(name, t);
    WEFT_CHECK(t.dtype() == DType::kF32)
        << op_ << ": " << name << " is " << t.str() << ", expected f32";
    return *this;
  }
  const Check& index(const char* name, const Tensor& t) const {
    defined(name, t);
    WEFT_CHECK(t.dtype() == DType::kI32 || t.dtype() == DType::kI64)
        << op_ << ": " << name << " is " << t.str() << ", expected i32 or i64";
    return *this;
  }
  const Check& shape(const char* name, const Tensor& t, const Shape& want) const {
    defined(name, t);
    WEFT_CHECK(t.shape() == want) << op_ << ": " << name << " is " << shape_str(t.shape())
                                  << ", expected " << shape_str(want);
    return *this;
  }
  const Check& ndim(const char* name, const Tensor& t, int n) const {
    defined(name, t);
    WEFT_CHECK(t.ndim() == n) << op_ << ": " << name << " is " << shape_str(t.shape())
                              << ", expected " << n << " dimensions";
    return *this;
  }
  const Check& numel(const char* name, const Tensor& t, int64_t n) const {
    defined(name, t);
    WEFT_CHECK(t.numel() == n) << op_ << ": " << name << " is " << shape_str(t.shape())
                               << ", expected " << n << " elements";
    return *this;
  }
  const Check& that(bool condition, const std::string& what) const {
    WEFT_CHECK(condition) << op_ << ": " << what;
    return *this;
  }

 private:
  void defined(const char* name, const Tensor& t) const {
    WEFT_CHECK(t.defined()) << op_ << ": " << name << " is undefined";
  }
  const char* op_;
};

// [..., D] -> [N, D] (shares storage, so outputs written through the view land in t).
Tensor rows_of(const Tensor& t) { return t.view({-1, t.dim(-1)}); }

// Optional [B, H, d, d] state: undefined, or exactly that shape.
void check_state(const Check& c, const char* name, const Tensor& t, const Shape& want) {
  if (t.defined()) c.floating(name, t).shape(name, t, want);
}

}  // namespace

// Calls cpu::fn or cuda::fn by the device of the call's tensors. The kernel may touch the
// emulated GPU's memory (DeviceAccess, tensor.h).
#ifdef WEFT_HAVE_CUDA
#define WEFT_DISPATCH(dev, fn, ...) \
  (::weft::DeviceAccess(), (dev).is_cpu() ? cpu::fn(__VA_ARGS__) : cuda::fn(__VA_ARGS__))
#else
#define WEFT_DISPATCH(dev, fn, ...)                                                               \
  (::weft::DeviceAccess(), (WEFT_CHECK((dev).is_cpu()) << #fn ": no CUDA support in this build"), \
   cpu::fn(__VA_ARGS__))
#endif

// ---- dense algebra ----

namespace {

std::atomic<bool> g_bf16_compute{false};

// Whether bf16 mode rounds `t`: an f32 tensor, in bf16 mode.
bool bf16_rounds(const Tensor& t) {
  return g_bf16_compute.load(std::memory_order_relaxed) && t.defined() && t.dtype() == DType::kF32;
}

#ifdef WEFT_HAVE_CUDA
// A bf16 copy of an f32 CUDA tensor.
Tensor cuda_bf16(const Tensor& t) {
  Tensor half = Tensor::empty(t.shape(), DType::kBF16, t.device());
  cuda::cast_into(t, half);
  return half;
}
#endif

// Rounds `t` in place to bf16 values (bf16 mode): a result stored in bf16.
void bf16_output(Tensor& t) {
  if (!bf16_rounds(t)) return;
  if (t.is_cpu()) {
    DeviceAccess access;  // a rounding kernel
    float* v = t.data<float>();
    const int64_t n = t.numel();
    for (int64_t i = 0; i < n; ++i) v[i] = bf16_to_f32(f32_to_bf16(v[i]));
    return;
  }
#ifdef WEFT_HAVE_CUDA
  cuda::cast_into(cuda_bf16(t), t);
#endif
}

// `t` rounded to bf16 in bf16 mode, `t` itself otherwise. On the CPU an f32 copy holding bf16
// values (an exact emulation); on CUDA a bf16 tensor, which cuBLASLt multiplies on the tensor
// cores with f32 accumulation.
Tensor bf16_input(const Tensor& t) {
  if (!bf16_rounds(t)) return t;
  if (t.is_cpu()) {
    Tensor r = t.clone();
    bf16_output(r);
    return r;
  }
#ifdef WEFT_HAVE_CUDA
  return cuda_bf16(t);
#else
  return t;
#endif
}

}  // namespace

void set_bf16_compute(bool on) { g_bf16_compute.store(on, std::memory_order_relaxed); }
bool bf16_compute() { return g_bf16_compute.load(std::memory_order_relaxed); }

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
          float beta) {
  const Check ck("gemm");
  const Device dev = ck.device({&a, &b, &c});
  ck.floating("a", a).ndim("a", a, 2).floating("b", b).ndim("b", b, 2);
  ck.floating("c", c).ndim("c", c, 2);
  const int64_t m = trans_a ? a.dim(1) : a.dim(0);
  const int64_t k = trans_a ? a.dim(0) : a.dim(1);
  const int64_t kb = trans_b ? b.dim(1) : b.dim(0);
  const int64_t n = trans_b ? b.dim(0) : b.dim(1);
  ck.that(k == kb, "inner dimensions differ: op(a) is " + shape_str({m, k}) + ", op(b) is " +
                       shape_str({kb, n}));
  ck.shape("c", c, {m, n});
  const Tensor ar = bf16_input(a), br = bf16_input(b);
  WEFT_DISPATCH(dev, gemm, ar, trans_a, br, trans_b, c, alpha, beta);
}

void set_batch_invariant(bool on) { g_batch_invariant.store(on, std::memory_order_relaxed); }
bool batch_invariant() { return g_batch_invariant.load(std::memory_order_relaxed); }

void linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  const Check ck("linear_forward");
  const Device dev = ck.device({&x, &w, bias, &y});
  ck.floating("w", w).ndim("w", w, 2).floating("x", x).floating("y", y);
  const int64_t out = w.dim(0);
  const int64_t in = w.dim(1);
  ck.that(x.ndim() >= 1 && x.dim(-1) == in,
          "x is " + shape_str(x.shape()) + ", expected [..., " + std::to_string(in) + "]");
  Shape y_shape = x.shape();
  y_shape.back() = out;
  ck.shape("y", y, y_shape);
  if (bias != nullptr) ck.floating("bias", *bias).shape("bias", *bias, {out});
  Tensor x2 = bf16_input(rows_of(x));
  Tensor y2 = rows_of(y);
  const Tensor wr = bf16_input(w);
  const Tensor br = bias != nullptr ? bf16_input(*bias) : Tensor();
  WEFT_DISPATCH(dev, linear_forward, x2, wr, bias != nullptr ? &br : nullptr, y2);
  bf16_output(y2);
}

void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                     Tensor* db) {
  const Check ck("linear_backward");
  const Device dev = ck.device({&x, &w, &dy, dx, dw, db});
  ck.floating("w", w).ndim("w", w, 2).floating("x", x).floating("dy", dy);
  const int64_t out = w.dim(0);
  const int64_t in = w.dim(1);
  ck.that(x.ndim() >= 1 && x.dim(-1) == in,
          "x is " + shape_str(x.shape()) + ", expected [..., " + std::to_string(in) + "]");
  Shape dy_shape = x.shape();
  dy_shape.back() = out;
  ck.shape("dy", dy, dy_shape);
  if (dx != nullptr) ck.floating("dx", *dx).shape("dx", *dx, x.shape());
  if (dw != nullptr) ck.floating("dw", *dw).shape("dw", *dw, w.shape());
  if (db != nullptr) ck.floating("db", *db).shape("db", *db, {out});
  const Tensor x2 = bf16_input(rows_of(x));
  const Tensor dy2 = bf16_input(rows_of(dy));
  const Tensor wr = bf16_input(w);
  Tensor dx2 = dx != nullptr ? rows_of(*dx) : Tensor();
  // dw and db accumulate in f32 (the master gradients); dx is an activation gradient: bf16.
  WEFT_DISPATCH(dev, linear_backward, x2, wr, dy2, dx != nullptr ? &dx2 : nullptr, dw, db);
  if (dx != nullptr) bf16_output(dx2);
}

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
