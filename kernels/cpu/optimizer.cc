// AdamW as torch.optim.AdamW computes it (decoupled weight decay, bias corrections).
// The loop runs 8 lanes at a time with AVX2 where the CPU has it: the compiler cannot vectorise
// std::sqrt itself (errno), and the vector path does the same IEEE operations in the same order
// (no FMA), so both paths give identical bits.
#include <cmath>

#include "kernels/cpu/cpu_ops.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define WEFT_ADAMW_AVX2 1
#endif

namespace weft::kernels::cpu {

namespace {

struct AdamWScalars {
  float b1, b2, eps, decay, step_size, bc2_sqrt;
};

// Elements [begin, n): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p = p * decay - step_size * m / (sqrt(v) / bc2_sqrt + eps).
void adamw_scalar(float* p, const float* g, float* m, float* v, int64_t begin, int64_t n,
                  const AdamWScalars& s) {
  for (int64_t i = begin; i < n; ++i) {
    m[i] = s.b1 * m[i] + (1.0f - s.b1) * g[i];
    v[i] = s.b2 * v[i] + (1.0f - s.b2) * g[i] * g[i];
    const float denom = std::sqrt(v[i]) / s.bc2_sqrt + s.eps;
    p[i] = p[i] * s.decay - s.step_size * m[i] / denom;
  }
}

#ifdef WEFT_ADAMW_AVX2
// The same update on whole groups of 8; returns how many elements it did.
__attribute__((target("avx2"))) int64_t adamw_avx2(float* p, const float* g, float* m, float* v,
                                                   int64_t n, const AdamWScalars& s) {
  const __m256 b1 = _mm256_set1_ps(s.b1), one_b1 = _mm256_set1_ps(1.0f - s.b1);
  const __m256 b2 = _mm256_set1_ps(s.b2), one_b2 = _mm256_set1_ps(1.0f - s.b2);
  const __m256 eps = _mm256_set1_ps(s.eps), decay = _mm256_set1_ps(s.decay);
  const __m256 step_size = _mm256_set1_ps(s.step_size), bc2 = _mm256_set1_ps(s.bc2_sqrt);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i);
    const __m256 mi =
        _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(one_b1, gi));
    const __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)),
                                    _mm256_mul_ps(_mm256_mul_ps(one_b2, gi), gi));
    const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
    const __m256 update = _mm256_div_ps(_mm256_mul_ps(step_size, mi), denom);
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    _mm256_storeu_ps(p + i, _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(p + i), decay), update));
  }
  return i;
}
#endif

}  // namespace

void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& cfg,
                int64_t step) {
  const double bc1 = 1.0 - std::pow(double{cfg.beta1}, step);
  const AdamWScalars s{
      .b1 = cfg.beta1,
      .b2 = cfg.beta2,
      .eps = cfg.eps,
      .decay = 1.0f - cfg.lr * cfg.weight_decay,
      .step_size = static_cast<float>(cfg.lr / bc1),
      .bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(double{cfg.beta2}, step))),
  };
  float* p = param.data<float>();
  const float* g = grad.data<float>();
  float* mp = m.data<float>();
  float* vp = v.data<float>();
  const int64_t n = param.numel();
  int64_t done = 0;
#ifdef WEFT_ADAMW_AVX2
  if (__builtin_cpu_supports("avx2")) done = adamw_avx2(p, g, mp, vp, n, s);
#endif
  adamw_scalar(p, g, mp, vp, done, n, s);
}

}  // namespace weft::kernels::cpu
