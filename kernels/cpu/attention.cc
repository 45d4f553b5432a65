// Softmax attention, block-wise per (batch, head): S = scale Q K^T by GEMM on a block of query
// rows, a masked row softmax, then O = P V by GEMM. Heads are read in place from [B, T, heads, d]
// (leading dimension heads*d), so nothing is transposed or copied.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"

namespace weft::kernels::cpu {

namespace {

constexpr int64_t kQueryBlock = 64;

// Geometry of one call; query head h reads kv head h / group.
struct Geometry {
  int64_t batch, tq, tk, heads, kv_heads, d, group;
  int64_t delta;  // q_offset - k_offset: query i sees keys j <= delta + i when causal
  bool causal;

  Geometry(const Tensor& q, const Tensor& k, bool causal_, int64_t q_offset, int64_t k_offset)
      : batch(q.dim(0)),
        tq(q.dim(1)),
        tk(k.dim(1)),
        heads(q.dim(2)),
        kv_heads(k.dim(2)),
        d(q.dim(3)),
        group(q.dim(2) / k.dim(2)),
        delta(q_offset - k_offset),
        causal(causal_) {}

  // Query row i sees keys [0, visible(i)).
  int64_t visible(int64_t i) const {
    return causal ? std::clamp<int64_t>(delta + i + 1, 0, tk) : tk;
  }
  int64_t ldq() const { return heads * d; }
  int64_t ldk() const { return kv_heads * d; }
  // Offsets (in floats) of head h of batch b in q-like and k-like tensors, and of its lse row.
  int64_t q_at(int64_t b, int64_t h) const { return (b * tq * heads + h) * d; }
  int64_t k_at(int64_t b, int64_t h) const { return (b * tk * kv_heads + h / group) * d; }
  int64_t lse_at(int64_t b, int64_t h) const { return (b * heads + h) * tq; }
};

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale, bool causal,
                       int64_t q_offset, int64_t k_offset, Tensor& o, Tensor& lse) {
  const Geometry g(q, k, causal, q_offset, k_offset);
  const int64_t ldq = g.ldq();
  const int64_t ldk = g.ldk();
  std::vector<float> s(kQueryBlock * g.tk);  // [query block, keys]
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t h = 0; h < g.heads; ++h) {
      const float* qh = q.data<float>() + g.q_at(b, h);
      const float* kh = k.data<float>() + g.k_at(b, h);
      const float* vh = v.data<float>() + g.k_at(b, h);
      float* oh = o.data<float>() + g.q_at(b, h);
      float* lh = lse.data<float>() + g.lse_at(b, h);
      for (int64_t i0 = 0; i0 < g.tq; i0 += kQueryBlock) {
        const int64_t rows = std::min(kQueryBlock, g.tq - i0);
        const int64_t nk = g.visible(i0 + rows - 1);  // the most keys any row of the block sees
        sgemm(false, true, rows, nk, g.d, scale, qh + i0 * ldq, ldq, kh, ldk, 0.0f, s.data(), nk);
        for (int64_t r = 0; r < rows; ++r) {
          lh[i0 + r] = softmax_prefix(s.data() + r * nk, g.visible(i0 + r), nk);
        }
        if (nk == 0) {
          for (int64_t r = 0; r < rows; ++r) std::fill_n(oh + (i0 + r) * ldq, g.d, 0.0f);
        } else {
          sgemm(false, false, rows, g.d, nk, 1.0f, s.data(), nk, vh, ldk, 0.0f, oh + i0 * ldq, ldq);
        }
      }
    }
  }
}

// With P = exp(scale S - lse) and D_i = dO_i . o_i: dS = P * (dO V^T - D), dQ += scale dS K,
// dK += scale dS^T Q, dV += P^T dO.
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                        const Tensor& lse, const Tensor& dout, float scale, bool causal,
                        int64_t q_offset, int64_t k_offset, Tensor& dq, Tensor& dk, Tensor& dv) {
  const Geometry g(q, k, causal, q_offset, k_offset);
  const int64_t ldq = g.ldq();
  const int64_t ldk = g.ldk();
  std::vector<float> p(kQueryBlock * g.tk);   // [query block, keys]
  std::vector<float> ds(kQueryBlock * g.tk);  // dP, then dS
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t h = 0; h < g.heads; ++h) {
      const float* qh = q.data<float>() + g.q_at(b, h);
      const float* kh = k.data<float>() + g.k_at(b, h);
      const float* vh = v.data<float>() + g.k_at(b, h);
      const float* oh = o.data<float>() + g.q_at(b, h);
      const float* doh = dout.data<float>() + g.q_at(b, h);
      const float* lh = lse.data<float>() + g.lse_at(b, h);
      float* dqh = dq.data<float>() + g.q_at(b, h);
      float* dkh = dk.data<float>() + g.k_at(b, h);
      float* dvh = dv.data<float>() + g.k_at(b, h);
      for (int64_t i0 = 0; i0 < g.tq; i0 += kQueryBlock) {
        const int64_t rows = std::min(kQueryBlock, g.tq - i0);
        const int64_t nk = g.visible(i0 + rows - 1);
        if (nk == 0) continue;
        sgemm(false, true, rows, nk, g.d, scale, qh + i0 * ldq, ldq, kh, ldk, 0.0f, p.data(), nk);
        sgemm(false, true, rows, nk, g.d, 1.0f, doh + i0 * ldq, ldq, vh, ldk, 0.0f, ds.data(), nk);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + r;
          const int64_t n = lh[i] == kNegInf ? 0 : g.visible(i);
          float* pr = p.data() + r * nk;
          float* dsr = ds.data() + r * nk;
          const float* o_i = oh + i * ldq;
          const float* do_i = doh + i * ldq;
          const float od = dot(o_i, do_i, g.d);
          exp_shifted(pr, lh[i], 1.0f, n, pr);
          std::fill(pr + n, pr + nk, 0.0f);
          for (int64_t j = 0; j < nk; ++j) dsr[j] = pr[j] * (dsr[j] - od);
        }
        sgemm(false, false, rows, g.d, nk, scale, ds.data(), nk, kh, ldk, 1.0f, dqh + i0 * ldq,
              ldq);
        sgemm(true, false, nk, g.d, rows, scale, ds.data(), nk, qh + i0 * ldq, ldq, 1.0f, dkh, ldk);
        sgemm(true, false, nk, g.d, rows, 1.0f, p.data(), nk, doh + i0 * ldq, ldq, 1.0f, dvh, ldk);
      }
    }
  }
}

void attention_merge(Tensor& o, Tensor& lse, const Tensor& o_b, const Tensor& lse_b) {
  const int64_t batch = o.dim(0);
  const int64_t seq = o.dim(1);
  const int64_t heads = o.dim(2);
  const int64_t d = o.dim(3);
  float* op = o.data<float>();
  float* lp = lse.data<float>();
  const float* obp = o_b.data<float>();
  const float* lbp = lse_b.data<float>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t t = 0; t < seq; ++t) {
        const int64_t li = (b * heads + h) * seq + t;
        const float la = lp[li];
        const float lb = lbp[li];
        if (lb == kNegInf) continue;
        const float m = std::max(la, lb);
        const float merged = m + std::log(std::exp(la - m) + std::exp(lb - m));
        const float wa = std::exp(la - merged);
        const float wb = std::exp(lb - merged);
        float* oi = op + ((b * seq + t) * heads + h) * d;
        const float* obi = obp + ((b * seq + t) * heads + h) * d;
        for (int64_t c = 0; c < d; ++c) oi[c] = wa * oi[c] + wb * obi[c];
        lp[li] = merged;
      }
    }
  }
}

}  // namespace weft::kernels::cpu
