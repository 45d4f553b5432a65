// Attention over the paged KV cache (serving), and the cache write. One warp per (token, head):
// lanes split the head dim, positions are visited in order with an online softmax in f32, so a
// token's output does not depend on the rest of the batch.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace weft::kernels::cuda {
namespace {

// Head dims up to kMaxPerLane * 32.
constexpr int kMaxPerLane = 8;

__global__ void kv_cache_write_kernel(FloatRef k, FloatRef v, IndexRef slots, FloatRef k_cache,
                                      FloatRef v_cache, int64_t row, int64_t n) {
  for (int64_t i : grid_stride(n)) {
    const int64_t at = slots.load(i / row) * row + i % row;
    k_cache.store(at, k.load(i));
    v_cache.store(at, v.load(i));
  }
}

struct PagedShape {
  int64_t tokens, heads, d, block_size, kv_heads, max_blocks;
};

__global__ void paged_attention_kernel(FloatRef q, FloatRef k_cache, FloatRef v_cache,
                                       IndexRef tables, IndexRef seq, IndexRef pos, float scale,
                                       FloatRef o, PagedShape s) {
  const int lane = threadIdx.x % kWarp;
  const int64_t group = s.heads / s.kv_heads;
  for (int64_t row : warp_stride(s.tokens * s.heads)) {  // row = token * heads + head
    const int64_t i = row / s.heads, h = row % s.heads;
    const int64_t r = seq.load(i), last = pos.load(i);
    float qv[kMaxPerLane], acc[kMaxPerLane];
    for (int j = 0; j < kMaxPerLane; ++j) {
      const int64_t c = lane + j * kWarp;
      qv[j] = c < s.d ? q.load(row * s.d + c) : 0.0f;
      acc[j] = 0.0f;
    }
    float running_max = -INFINITY, total = 0.0f;
    for (int64_t t = 0; t <= last; ++t) {
      const int64_t block = tables.load(r * s.max_blocks + t / s.block_size);
      const int64_t at = ((block * s.block_size + t % s.block_size) * s.kv_heads + h / group) * s.d;
      float dot = 0.0f;
      for (int j = 0; j < kMaxPerLane; ++j) {
        const int64_t c = lane + j * kWarp;
        if (c < s.d) dot += qv[j] * k_cache.load(at + c);
      }
      const float score = warp_reduce(dot, SumOp{}) * scale;
      const float new_max = fmaxf(running_max, score);
      const float rescale = expf(running_max - new_max);
      const float w = expf(score - new_max);
      total = total * rescale + w;
      for (int j = 0; j < kMaxPerLane; ++j) {
        const int64_t c = lane + j * kWarp;
        if (c < s.d) acc[j] = acc[j] * rescale + w * v_cache.load(at + c);
      }
      running_max = new_max;
    }
    for (int j = 0; j < kMaxPerLane; ++j) {
      const int64_t c = lane + j * kWarp;
      if (c < s.d) o.store(row * s.d + c, acc[j] / total);
    }
  }
}

}  // namespace

void kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& slots, Tensor& k_cache,
                    Tensor& v_cache) {
  const int64_t row = k.dim(1) * k.dim(2);
  const int64_t n = k.dim(0) * row;
  if (n == 0) return;
  kv_cache_write_kernel<<<grid_for(n, kThreads), kThreads, 0, compute_stream()>>>(
      float_ref(k), float_ref(v), index_ref(slots), float_ref(k_cache), float_ref(v_cache), row, n);
  WEFT_CUDA_LAUNCH_CHECK();
}

void paged_attention_forward(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                             const Tensor& block_tables, const Tensor& seq, const Tensor& pos,
                             float scale, Tensor& o) {
  const PagedShape s{q.dim(0),       q.dim(1),       q.dim(2),
                     k_cache.dim(1), k_cache.dim(2), block_tables.dim(1)};
  WEFT_CHECK(s.d <= kMaxPerLane * kWarp)
      << "paged attention supports head dims up to " << kMaxPerLane * kWarp << ", got " << s.d;
  if (s.tokens == 0) return;
  paged_attention_kernel<<<warp_grid_for(s.tokens * s.heads, kThreads), kThreads, 0,
                           compute_stream()>>>(float_ref(q), float_ref(k_cache), float_ref(v_cache),
                                               index_ref(block_tables), index_ref(seq),
                                               index_ref(pos), scale, float_ref(o), s);
  WEFT_CUDA_LAUNCH_CHECK();
}

}  // namespace weft::kernels::cuda
