// Softmax attention forward (flash-attention style: key tiles in shared memory, online softmax
// in f32, writes o and lse) and the log-sum-exp merge of partial results.
#include "kernels/cuda/attention_tile.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace weft::kernels::cuda {
namespace {

// Grid (ceil(Tq / kBlockRows), B * H). Shared: k and v tiles [32][d+1], the block's q rows
// [kBlockRows][d].
__global__ void __launch_bounds__(kWarps* kWarp)
    attention_forward_kernel(FloatRef q, FloatRef k, FloatRef v, FloatRef o, float* lse,
                             AttentionShape s) {
  extern __shared__ float smem[];
  const int d = s.head_dim;
  const int stride = d + 1;
  float* k_tile = smem;
  float* v_tile = k_tile + kTileRows * stride;
  float* q_rows = v_tile + kTileRows * stride;
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int64_t b = blockIdx.y / s.heads;
  const int64_t h = blockIdx.y % s.heads;
  const int64_t kvh = h / s.group();
  const int64_t q0 = blockIdx.x * int64_t{kBlockRows};

  stage_rows(q, b, q0, kBlockRows, s.tq, s.heads, h, d, q_rows, d);
  // Keys past the last one any query of this block may see are never loaded.
  int64_t key_end = s.tk;
  if (s.causal) {
    const int64_t last_query = min(q0 + kBlockRows, s.tq) - 1;
    key_end = max(int64_t{0}, min(s.tk, s.q_offset + last_query - s.k_offset + 1));
  }

  // Running max m, sum l and unnormalised output per own row.
  float m[kRowsPerWarp];
  float l[kRowsPerWarp];
  float acc[kRowsPerWarp][kDimsPerLane] = {};
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
  }

  for (int64_t j0 = 0; j0 < key_end; j0 += kTileRows) {
    __syncthreads();  // the previous tiles are consumed
    stage_rows(k, b, j0, kTileRows, s.tk, s.kv_heads, kvh, d, k_tile, stride);
    stage_rows(v, b, j0, kTileRows, s.tk, s.kv_heads, kvh, d, v_tile, stride);
    __syncthreads();
    const int64_t j = j0 + lane;
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int row = warp * kRowsPerWarp + r;
      const int64_t i = q0 + row;
      const bool seen = s.visible(i, j);
      const float score =
          seen ? s.scale * dot(q_rows + row * d, k_tile + lane * stride, d) : -INFINITY;
      const float m_new = fmaxf(m[r], warp_reduce(score, MaxOp()));
      if (m_new == -INFINITY) continue;  // nothing visible yet (uniform across the warp)
      const float p = seen ? expf(score - m_new) : 0.0f;
      const float correction = expf(m[r] - m_new);  // 0 when m was -inf
      l[r] = l[r] * correction + warp_reduce(p, SumOp());
      for (float& a : acc[r]) a *= correction;
      accumulate_tile(acc[r], p, v_tile, stride, d);
      m[r] = m_new;
    }
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t i = q0 + warp * kRowsPerWarp + r;
    if (i >= s.tq) break;
    // A query that sees no key: o = 0, lse = -inf.
    const float inv_l = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    write_lane_dims(o, head_row(b, i, s.tq, s.heads, h, d), acc[r], inv_l, d, /*add=*/false);
    if (lane == 0) lse[s.lse_index(b, h, i)] = l[r] > 0.0f ? m[r] + logf(l[r]) : -INFINITY;
  }
}

// One warp per (b, t, h) row of o[B,T,H,d]; lse, lse_b [B,H,T]. All lanes read the old lse
// before lane 0 replaces it.
__global__ void attention_merge_kernel(FloatRef o, float* lse, FloatRef o_b, const float* lse_b,
                                       int64_t rows, int64_t seq, int64_t heads, int head_dim) {
  const int lane = threadIdx.x % kWarp;
  for (int64_t row : warp_stride(rows)) {
    const int64_t b = row / (seq * heads);
    const int64_t t = (row / heads) % seq;
    const int64_t h = row % heads;
    const int64_t li = (b * heads + h) * seq + t;
    const float la = lse[li];
    const float lb = lse_b[li];
    if (lb == -INFINITY) continue;  // the block saw no key: keep (o, lse)
    const float mx = fmaxf(la, lb);
    const float merged = mx + logf(expf(la - mx) + expf(lb - mx));
    const float wa = expf(la - merged);
    const float wb = expf(lb - merged);
    for (int c = lane; c < head_dim; c += kWarp) {
      const int64_t idx = row * head_dim + c;
      o.store(idx, wa * o.load(idx) + wb * o_b.load(idx));
    }
    __syncwarp();
    if (lane == 0) lse[li] = merged;
  }
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale, bool causal,
                       int64_t q_offset, int64_t k_offset, Tensor& o, Tensor& lse) {
  const AttentionShape s = attention_shape(q, k, scale, causal, q_offset, k_offset);
  if (s.batch * s.heads * s.tq == 0) return;
  const int stride = s.head_dim + 1;
  const size_t smem = sizeof(float) * (2 * kTileRows * stride + kBlockRows * s.head_dim);
  allow_shared_bytes(attention_forward_kernel, smem);
  const dim3 grid(static_cast<unsigned>((s.tq + kBlockRows - 1) / kBlockRows),
                  static_cast<unsigned>(s.batch * s.heads));
  attention_forward_kernel<<<grid, kWarps * kWarp, smem, compute_stream()>>>(
      float_ref(q), float_ref(k), float_ref(v), float_ref(o), lse.data<float>(), s);
  WEFT_CUDA_LAUNCH_CHECK();
}

void attention_merge(Tensor& o, Tensor& lse, const Tensor& o_b, const Tensor& lse_b) {
  const int64_t rows = o.dim(0) * o.dim(1) * o.dim(2);
  if (rows == 0) return;
  constexpr int kThreadsPerBlock = 128;
  attention_merge_kernel<<<warp_grid_for(rows, kThreadsPerBlock), kThreadsPerBlock, 0,
                           compute_stream()>>>(float_ref(o), lse.data<float>(), float_ref(o_b),
                                               lse_b.data<float>(), rows, o.dim(1), o.dim(2),
                                               static_cast<int>(o.dim(3)));
  WEFT_CUDA_LAUNCH_CHECK();
}

}  // namespace weft::kernels::cuda
