// Micro-benchmarks of the CPU kernels at small-model sizes (hidden 512, 8 heads of 32 or 64,
// 4 KV heads, FFN 1408, vocabulary 32000, 2048 tokens). GEMM-bound kernels report FLOP/s as
// items/s; memory-bound ones report bytes/s. Run single-threaded to compare with PyTorch at one
// thread:
//   OPENBLAS_NUM_THREADS=1 build/bench/kernels_bench
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/ops.h"

namespace weft::kernels {
namespace {

constexpr int64_t kHeads = 8;
constexpr int64_t kKvHeads = 4;

Tensor uniform(const Shape& shape, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::empty(shape);
  float* p = t.data<float>();
  uint32_t state = 12345;
  for (int64_t i = 0; i < t.numel(); ++i) {
    state = state * 1664525u + 1013904223u;
    p[i] = lo + (hi - lo) * static_cast<float>(state >> 8) / static_cast<float>(1u << 24);
  }
  return t;
}

void BM_Gemm(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const Tensor a = uniform({m, k});
  const Tensor b = uniform({n, k});
  Tensor c = Tensor::empty({m, n});
  for (auto _ : state) gemm(a, false, b, true, c);
  state.SetItemsProcessed(state.iterations() * 2 * m * n * k);
}
BENCHMARK(BM_Gemm)
    ->Args({4096, 512, 512})
    ->Args({4096, 1408, 512})
    ->Args({1024, 8000, 512})
    ->Unit(benchmark::kMillisecond);

// Causal self-attention over [B, T, 8, d] queries and [B, T, 4, d] keys/values with
// B = max(1, 2048 / T): state.range(0) = T, state.range(1) = d.
struct AttentionInputs {
  int64_t b, t, d;
  Tensor q, k, v, o, lse, dout, dq, dk, dv;
  explicit AttentionInputs(const benchmark::State& state)
      : b(std::max<int64_t>(1, 2048 / state.range(0))),
        t(state.range(0)),
        d(state.range(1)),
        q(uniform({b, t, kHeads, d})),
        k(uniform({b, t, kKvHeads, d})),
        v(uniform({b, t, kKvHeads, d})),
        o(Tensor::empty(q.shape())),
        lse(Tensor::empty({b, kHeads, t})),
        dout(uniform(q.shape())),
        dq(Tensor::zeros(q.shape())),
        dk(Tensor::zeros(k.shape())),
        dv(Tensor::zeros(k.shape())) {}
  float scale() const { return 1.0f / std::sqrt(static_cast<float>(d)); }
  // FLOPs of one causal S = QK^T (or P V): half of T x T x d multiply-adds per head.
  int64_t half_gemm_flops() const { return b * kHeads * t * t * d; }
};

void BM_AttentionForward(benchmark::State& state) {
  AttentionInputs in(state);
  for (auto _ : state) {
    attention_forward(in.q, in.k, in.v, in.scale(), true, 0, 0, in.o, in.lse);
  }
  state.SetItemsProcessed(state.iterations() * 2 * in.half_gemm_flops());
}
BENCHMARK(BM_AttentionForward)
    ->Args({256, 32})
    ->Args({512, 64})
    ->Args({2048, 64})
    ->Unit(benchmark::kMillisecond);

void BM_AttentionBackward(benchmark::State& state) {
  AttentionInputs in(state);
  attention_forward(in.q, in.k, in.v, in.scale(), true, 0, 0, in.o, in.lse);
  for (auto _ : state) {
    attention_backward(in.q, in.k, in.v, in.o, in.lse, in.dout, in.scale(), true, 0, 0, in.dq,
                       in.dk, in.dv);
  }
  // Recomputed S, then dP, dQ, dK, dV.
  state.SetItemsProcessed(state.iterations() * 5 * in.half_gemm_flops());
}
BENCHMARK(BM_AttentionBackward)
    ->Args({256, 32})
    ->Args({512, 64})
    ->Args({2048, 64})
    ->Unit(benchmark::kMillisecond);

std::vector<float> decays() {
  std::vector<float> g(kHeads);
  for (int64_t h = 0; h < kHeads; ++h) g[h] = 1.0f - std::pow(2.0f, -5.0f - h);
  return g;
}

void BM_LinearAttentionForward(benchmark::State& state) {
  AttentionInputs in(state);
  Tensor m = Tensor::empty({in.b, kHeads, in.d, in.d});
  const std::vector<float> gamma = decays();
  for (auto _ : state) {
    linear_attention_forward(in.q, in.k, in.v, gamma, in.scale(), Tensor(), 64, in.o, m);
  }
  state.SetItemsProcessed(state.iterations() * in.b * in.t * kHeads);  // token-heads
}
BENCHMARK(BM_LinearAttentionForward)
    ->Args({256, 32})
    ->Args({2048, 64})
    ->Unit(benchmark::kMillisecond);

void BM_LinearAttentionBackward(benchmark::State& state) {
  AttentionInputs in(state);
  Tensor ds_in = Tensor::empty({in.b, kHeads, in.d, in.d});
  const std::vector<float> gamma = decays();
  for (auto _ : state) {
    linear_attention_backward(in.q, in.k, in.v, gamma, in.scale(), Tensor(), in.dout, Tensor(), 64,
                              in.dq, in.dk, in.dv, ds_in);
  }
  state.SetItemsProcessed(state.iterations() * in.b * in.t * kHeads);  // token-heads
}
BENCHMARK(BM_LinearAttentionBackward)
    ->Args({256, 32})
    ->Args({2048, 64})
    ->Unit(benchmark::kMillisecond);

constexpr int64_t kTokens = 4096;
constexpr int64_t kHidden = 512;
constexpr int64_t kFfn = 1408;
constexpr int64_t kBytes = sizeof(float);

void BM_RmsNormForward(benchmark::State& state) {
  const Tensor x = uniform({kTokens, kHidden});
  const Tensor w = uniform({kHidden});
  Tensor y = Tensor::empty(x.shape());
  Tensor rstd = Tensor::empty({kTokens});
  for (auto _ : state) rmsnorm_forward(x, w, 1e-5f, y, rstd);
  state.SetBytesProcessed(state.iterations() * 2 * kTokens * kHidden * kBytes);
}
BENCHMARK(BM_RmsNormForward)->Unit(benchmark::kMicrosecond);

void BM_RmsNormBackward(benchmark::State& state) {
  const Tensor x = uniform({kTokens, kHidden});
  const Tensor w = uniform({kHidden});
  const Tensor dy = uniform({kTokens, kHidden});
  Tensor y = Tensor::empty(x.shape());
  Tensor rstd = Tensor::empty({kTokens});
  rmsnorm_forward(x, w, 1e-5f, y, rstd);
  Tensor dx = Tensor::empty(x.shape());
  Tensor dw = Tensor::zeros({kHidden});
  for (auto _ : state) rmsnorm_backward(x, w, rstd, dy, dx, dw);
  state.SetBytesProcessed(state.iterations() * 3 * kTokens * kHidden * kBytes);
}
BENCHMARK(BM_RmsNormBackward)->Unit(benchmark::kMicrosecond);

void BM_SwigluForward(benchmark::State& state) {
  const Tensor gate = uniform({kTokens, kFfn}, -4, 4);
  const Tensor up = uniform({kTokens, kFfn});
  Tensor h = Tensor::empty(gate.shape());
  for (auto _ : state) swiglu_forward(gate, up, h);
  state.SetBytesProcessed(state.iterations() * 3 * kTokens * kFfn * kBytes);
}
BENCHMARK(BM_SwigluForward)->Unit(benchmark::kMicrosecond);

void BM_SwigluBackward(benchmark::State& state) {
  const Tensor gate = uniform({kTokens, kFfn}, -4, 4);
  const Tensor up = uniform({kTokens, kFfn});
  const Tensor dh = uniform({kTokens, kFfn});
  Tensor dgate = Tensor::empty(gate.shape());
  Tensor dup = Tensor::empty(gate.shape());
  for (auto _ : state) swiglu_backward(gate, up, dh, dgate, dup);
  state.SetBytesProcessed(state.iterations() * 5 * kTokens * kFfn * kBytes);
}
BENCHMARK(BM_SwigluBackward)->Unit(benchmark::kMicrosecond);

// Forward (lse, target logit) and backward (dlogits) over [512, 32000] logits.
void BM_CrossEntropy(benchmark::State& state) {
  const int64_t rows = 512, vocab = 32000;
  const Tensor logits = uniform({rows, vocab}, -8, 8);
  std::vector<int64_t> ids(rows);
  for (int64_t n = 0; n < rows; ++n) ids[n] = (n * 7919) % vocab;
  const Tensor targets = Tensor::from_ints(ids, {rows});
  const Tensor row_scale = Tensor::full({rows}, 1.0f / rows);
  Tensor lse = Tensor::empty({rows});
  Tensor target_logit = Tensor::empty({rows});
  Tensor dlogits = Tensor::empty(logits.shape());
  for (auto _ : state) {
    cross_entropy_forward(logits, targets, 0, lse, target_logit);
    cross_entropy_backward(logits, targets, 0, lse, row_scale, dlogits);
  }
  state.SetBytesProcessed(state.iterations() * 3 * rows * vocab * kBytes);
}
BENCHMARK(BM_CrossEntropy)->Unit(benchmark::kMillisecond);

void BM_AdamW(benchmark::State& state) {
  const int64_t n = 1 << 22;
  Tensor p = uniform({n});
  const Tensor g = uniform({n});
  Tensor m = Tensor::zeros({n});
  Tensor v = Tensor::zeros({n});
  AdamWConfig cfg;
  cfg.weight_decay = 0.1f;
  int64_t step = 0;
  for (auto _ : state) adamw_step(p, g, m, v, cfg, ++step);
  state.SetBytesProcessed(state.iterations() * 7 * n * kBytes);  // read p g m v, write p m v
}
BENCHMARK(BM_AdamW)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace weft::kernels

BENCHMARK_MAIN();
