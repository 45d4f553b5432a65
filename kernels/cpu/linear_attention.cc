// Decayed linear attention in chunks, per (batch, head) with decay g:
//   intra:  O_c  = (A ∘ scale g^(a-b) [b <= a]) V_c with A = Q_c K_c^T          [L, L] @ [L, d]
//   inter:  O_c += diag(scale g^(a+1)) Q_c S_c,  S_c = g^t0 S_in + M_c (state at chunk start)
//   state:  M_{c+1} = g^L M_c + K_c^T diag(g^(L-1-b)) V_c
// Every product is a GEMM on one head's rows read in place (leading dimension heads*d).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"

namespace weft::kernels::cpu {

namespace {

struct Geometry {
  int64_t batch, seq, heads, kv_heads, d, group, chunk, num_chunks;

  Geometry(const Tensor& q, const Tensor& k, int64_t chunk_)
      : batch(q.dim(0)),
        seq(q.dim(1)),
        heads(q.dim(2)),
        kv_heads(k.dim(2)),
        d(q.dim(3)),
        group(q.dim(2) / k.dim(2)),
        chunk(std::max<int64_t>(1, std::min(chunk_, q.dim(1)))),
        num_chunks((q.dim(1) + chunk - 1) / chunk) {}

  int64_t ldq() const { return heads * d; }
  int64_t ldk() const { return kv_heads * d; }
  int64_t q_at(int64_t b, int64_t h, int64_t t) const { return ((b * seq + t) * heads + h) * d; }
  int64_t k_at(int64_t b, int64_t h, int64_t t) const {
    return ((b * seq + t) * kv_heads + h / group) * d;
  }
  int64_t state_at(int64_t b, int64_t h) const { return (b * heads + h) * d * d; }
};

// pw[n] = g^n for n = 0..count.
void decay_powers(float g, int64_t count, std::vector<float>& pw) {
  pw.resize(count + 1);
  for (int64_t n = 0; n <= count; ++n) pw[n] = static_cast<float>(std::pow(double{g}, n));
}

// a[L, L] *= scale g^(row-col) on and below the diagonal; zero above it.
void decay_mask(float* a, int64_t len, const std::vector<float>& pw, float scale) {
  for (int64_t r = 0; r < len; ++r) {
    float* row = a + r * len;
    for (int64_t c = 0; c <= r; ++c) row[c] *= scale * pw[r - c];
    std::fill(row + r + 1, row + len, 0.0f);
  }
}

// dst[L, d] = diag(w[0..L)) src, src rows with leading dimension ld.
void scale_rows(const float* src, int64_t ld, int64_t len, int64_t d, const float* w, float* dst) {
  for (int64_t r = 0; r < len; ++r) {
    for (int64_t c = 0; c < d; ++c) dst[r * d + c] = w[r] * src[r * ld + c];
  }
}

// Weights g^(L-1-b) for b = 0..L-1 (how much of position b survives to the chunk's end).
void tail_weights(const std::vector<float>& pw, int64_t len, std::vector<float>& w) {
  for (int64_t b = 0; b < len; ++b) w[b] = pw[len - 1 - b];
}

// M = g^L M + K_c^T diag(g^(L-1-b)) V_c; kd is [L, d] scratch.
void advance_state(const float* kc, const float* vc, int64_t ldk, int64_t len, int64_t d,
                   const std::vector<float>& pw, std::vector<float>& w, float* kd, float* m) {
  tail_weights(pw, len, w);
  scale_rows(kc, ldk, len, d, w.data(), kd);
  sgemm(true, false, d, d, len, 1.0f, kd, d, vc, ldk, pw[len], m, d);
}

// state = M + g^t0 S_in (or M alone without S_in).
void chunk_state(const float* m, const float* s_in, double g, int64_t t0, int64_t dd,
                 float* state) {
  if (s_in == nullptr) {
    std::copy(m, m + dd, state);
    return;
  }
  const float gt = static_cast<float>(std::pow(g, t0));
  for (int64_t i = 0; i < dd; ++i) state[i] = m[i] + gt * s_in[i];
}

}  // namespace

void linear_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                              const std::vector<float>& gamma, float scale, const Tensor& s_in,
                              int64_t chunk, Tensor& o, Tensor& m_local) {
  const Geometry geo(q, k, chunk);
  const int64_t d = geo.d;
  const int64_t cl = geo.chunk;
  const int64_t ldq = geo.ldq();
  const int64_t ldk = geo.ldk();
  std::vector<float> a(cl * cl), kd(cl * d), state(d * d), w(cl), pw, qrow_w(cl);
  m_local.zero_();
  for (int64_t b = 0; b < geo.batch; ++b) {
    for (int64_t h = 0; h < geo.heads; ++h) {
      const float g = gamma[h];
      decay_powers(g, cl, pw);
      for (int64_t r = 0; r < cl; ++r) qrow_w[r] = scale * pw[r + 1];
      float* m = m_local.data<float>() + geo.state_at(b, h);
      const float* sin = s_in.defined() ? s_in.data<float>() + geo.state_at(b, h) : nullptr;
      for (int64_t t0 = 0; t0 < geo.seq; t0 += cl) {
        const int64_t len = std::min(cl, geo.seq - t0);
        const float* qc = q.data<float>() + geo.q_at(b, h, t0);
        const float* kc = k.data<float>() + geo.k_at(b, h, t0);
        const float* vc = v.data<float>() + geo.k_at(b, h, t0);
        float* oc = o.data<float>() + geo.q_at(b, h, t0);
        chunk_state(m, sin, g, t0, d * d, state.data());
        sgemm(false, false, len, d, d, 1.0f, qc, ldq, state.data(), d, 0.0f, oc, ldq);
        for (int64_t r = 0; r < len; ++r) {
          for (int64_t c = 0; c < d; ++c) oc[r * ldq + c] *= qrow_w[r];
        }
        sgemm(false, true, len, len, d, 1.0f, qc, ldq, kc, ldk, 0.0f, a.data(), len);
        decay_mask(a.data(), len, pw, scale);
        sgemm(false, false, len, d, len, 1.0f, a.data(), len, vc, ldk, 1.0f, oc, ldq);
        advance_state(kc, vc, ldk, len, d, pw, w, kd.data(), m);
      }
    }
  }
}

// Chunks in reverse with dS = the gradient of the state at the current chunk's end (ds_out at
// first). Per chunk: intra terms through the masked A and B = dO_c V_c^T; inter dQ_c +=
// diag(scale g^(a+1)) dO_c S_c^T; dK_c += diag(g^(L-1-b)) V_c dS^T; dV_c += diag(g^(L-1-b)) K_c dS;
// then dS = g^L dS + Q_c^T diag(scale g^(a+1)) dO_c. After chunk 0, dS is ds_in.
void linear_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                               const std::vector<float>& gamma, float scale, const Tensor& s_in,
                               const Tensor& dout, const Tensor& ds_out, int64_t chunk, Tensor& dq,
                               Tensor& dk, Tensor& dv, Tensor& ds_in) {
  const Geometry geo(q, k, chunk);
  const int64_t d = geo.d;
  const int64_t dd = d * d;
  const int64_t cl = geo.chunk;
  const int64_t ldq = geo.ldq();
  const int64_t ldk = geo.ldk();
  std::vector<float> a(cl * cl), bm(cl * cl), kd(cl * d), vd(cl * d), dod(cl * d), m(dd);
  std::vector<float> states(geo.num_chunks * dd), w(cl), pw, qrow_w(cl);
  for (int64_t b = 0; b < geo.batch; ++b) {
    for (int64_t h = 0; h < geo.heads; ++h) {
      const float g = gamma[h];
      decay_powers(g, cl, pw);
      for (int64_t r = 0; r < cl; ++r) qrow_w[r] = scale * pw[r + 1];
      const float* sin = s_in.defined() ? s_in.data<float>() + geo.state_at(b, h) : nullptr;
      std::fill(m.begin(), m.end(), 0.0f);
      for (int64_t c = 0; c < geo.num_chunks; ++c) {
        const int64_t t0 = c * cl;
        const int64_t len = std::min(cl, geo.seq - t0);
        chunk_state(m.data(), sin, g, t0, dd, states.data() + c * dd);
        advance_state(k.data<float>() + geo.k_at(b, h, t0), v.data<float>() + geo.k_at(b, h, t0),
                      ldk, len, d, pw, w, kd.data(), m.data());
      }
      float* ds = ds_in.data<float>() + geo.state_at(b, h);
      if (ds_out.defined()) {
        const float* src = ds_out.data<float>() + geo.state_at(b, h);
        std::copy(src, src + dd, ds);
      } else {
        std::fill(ds, ds + dd, 0.0f);
      }
      for (int64_t c = geo.num_chunks - 1; c >= 0; --c) {
        const int64_t t0 = c * cl;
        const int64_t len = std::min(cl, geo.seq - t0);
        const float* qc = q.data<float>() + geo.q_at(b, h, t0);
        const float* kc = k.data<float>() + geo.k_at(b, h, t0);
        const float* vc = v.data<float>() + geo.k_at(b, h, t0);
        const float* doc = dout.data<float>() + geo.q_at(b, h, t0);
        float* dqc = dq.data<float>() + geo.q_at(b, h, t0);
        float* dkc = dk.data<float>() + geo.k_at(b, h, t0);
        float* dvc = dv.data<float>() + geo.k_at(b, h, t0);
        sgemm(false, true, len, len, d, 1.0f, qc, ldq, kc, ldk, 0.0f, a.data(), len);
        decay_mask(a.data(), len, pw, scale);
        sgemm(true, false, len, d, len, 1.0f, a.data(), len, doc, ldq, 1.0f, dvc, ldk);
        sgemm(false, true, len, len, d, 1.0f, doc, ldq, vc, ldk, 0.0f, bm.data(), len);
        decay_mask(bm.data(), len, pw, scale);
        sgemm(false, false, len, d, len, 1.0f, bm.data(), len, kc, ldk, 1.0f, dqc, ldq);
        sgemm(true, false, len, d, len, 1.0f, bm.data(), len, qc, ldq, 1.0f, dkc, ldk);
        scale_rows(doc, ldq, len, d, qrow_w.data(), dod.data());
        sgemm(false, true, len, d, d, 1.0f, dod.data(), d, states.data() + c * dd, d, 1.0f, dqc,
              ldq);
        tail_weights(pw, len, w);
        scale_rows(vc, ldk, len, d, w.data(), vd.data());
        scale_rows(kc, ldk, len, d, w.data(), kd.data());
        sgemm(false, true, len, d, d, 1.0f, vd.data(), d, ds, d, 1.0f, dkc, ldk);
        sgemm(false, false, len, d, d, 1.0f, kd.data(), d, ds, d, 1.0f, dvc, ldk);
        sgemm(true, false, d, d, len, 1.0f, qc, ldq, dod.data(), d, pw[len], ds, d);
      }
    }
  }
}

}  // namespace weft::kernels::cpu
