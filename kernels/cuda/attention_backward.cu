// Softmax attention backward from a GIVEN (o, lse): P = exp(scale S - lse) is recomputed tile by
// tile, D_i = rowsum(dO_i * o_i), dS = P (dP - D). Two passes so that every output row has one
// owning warp and no atomics are needed: one over query rows (dQ), one over key rows (dK, dV,
// summed over the query heads that share a KV head).
#include "kernels/cuda/attention_tile.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace weft::kernels::cuda {
namespace {

// delta[B,H,Tq] = rowsum(dout * o); one warp per (b, i, h) row of [B,Tq,H,d].
__global__ void attention_delta_kernel(FloatRef o, FloatRef dout, float* delta, AttentionShape s) {
  const int lane = threadIdx.x % kWarp;
  const int64_t rows = s.batch * s.tq * s.heads;
  for (int64_t row : warp_stride(rows)) {
    float acc = 0.0f;
    for (int c = lane; c < s.head_dim; c += kWarp) {
      const int64_t idx = row * s.head_dim + c;
      acc += dout.load(idx) * o.load(idx);
    }
    acc = warp_reduce(acc, SumOp());
    const int64_t b = row / (s.tq * s.heads);
    const int64_t i = (row / s.heads) % s.tq;
    const int64_t h = row % s.heads;
    if (lane == 0) delta[s.lse_index(b, h, i)] = acc;
  }
}

// P and dS of query i against key j: p = exp(scale q.k - lse_i) where visible, ds = p (dO.v - D_i).
struct ProbGrad {
  float p;
  float ds;
};
__device__ inline ProbGrad prob_and_grad(bool seen, float lse_i, float delta_i, float qk, float dov,
                                         float scale) {
  // A query whose lse is -inf saw no key anywhere: its P row is zero.
  if (!seen || lse_i == -INFINITY) return {0.0f, 0.0f};
  const float p = expf(scale * qk - lse_i);
  return {p, p * (dov - delta_i)};
}

// dQ += scale sum_j dS_ij k_j. Grid (ceil(Tq / kBlockRows), B * H). Shared: k and v tiles
// [32][d+1], the block's q and dO rows [kBlockRows][d].
__global__ void __launch_bounds__(kWarps* kWarp)
    attention_dq_kernel(FloatRef q, FloatRef k, FloatRef v, FloatRef dout, const float* lse,
                        const float* delta, FloatRef dq, AttentionShape s) {
  extern __shared__ float smem[];
  const int d = s.head_dim;
  const int stride = d + 1;
  float* k_tile = smem;
  float* v_tile = k_tile + kTileRows * stride;
  float* q_rows = v_tile + kTileRows * stride;
  float* do_rows = q_rows + kBlockRows * d;
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int64_t b = blockIdx.y / s.heads;
  const int64_t h = blockIdx.y % s.heads;
  const int64_t kvh = h / s.group();
  const int64_t q0 = blockIdx.x * int64_t{kBlockRows};

  stage_rows(q, b, q0, kBlockRows, s.tq, s.heads, h, d, q_rows, d);
  stage_rows(dout, b, q0, kBlockRows, s.tq, s.heads, h, d, do_rows, d);
  float row_lse[kRowsPerWarp];
  float row_delta[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t i = q0 + warp * kRowsPerWarp + r;
    row_lse[r] = i < s.tq ? lse[s.lse_index(b, h, i)] : -INFINITY;
    row_delta[r] = i < s.tq ? delta[s.lse_index(b, h, i)] : 0.0f;
  }
  int64_t key_end = s.tk;
  if (s.causal) {
    const int64_t last_query = min(q0 + kBlockRows, s.tq) - 1;
    key_end = max(int64_t{0}, min(s.tk, s.q_offset + last_query - s.k_offset + 1));
  }

  float acc[kRowsPerWarp][kDimsPerLane] = {};
  for (int64_t j0 = 0; j0 < key_end; j0 += kTileRows) {
    __syncthreads();
    stage_rows(k, b, j0, kTileRows, s.tk, s.kv_heads, kvh, d, k_tile, stride);
    stage_rows(v, b, j0, kTileRows, s.tk, s.kv_heads, kvh, d, v_tile, stride);
    __syncthreads();
    const int64_t j = j0 + lane;
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int row = warp * kRowsPerWarp + r;
      const bool seen = s.visible(q0 + row, j);
      const float qk = seen ? dot(q_rows + row * d, k_tile + lane * stride, d) : 0.0f;
      const float dov = seen ? dot(do_rows + row * d, v_tile + lane * stride, d) : 0.0f;
      const ProbGrad pg = prob_and_grad(seen, row_lse[r], row_delta[r], qk, dov, s.scale);
      accumulate_tile(acc[r], pg.ds, k_tile, stride, d);
    }
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t i = q0 + warp * kRowsPerWarp + r;
    if (i >= s.tq) break;
    write_lane_dims(dq, head_row(b, i, s.tq, s.heads, h, d), acc[r], s.scale, d, /*add=*/true);
  }
}

// dV += sum_i P_ij dO_i and dK += scale sum_i dS_ij q_i over every query head of KV head kvh.
// Grid (ceil(Tk / kBlockRows), B * Hkv). Shared: q and dO tiles [32][d+1], the block's k and v
// rows [kBlockRows][d], the tile's lse and D [32].
__global__ void __launch_bounds__(kWarps* kWarp)
    attention_dkdv_kernel(FloatRef q, FloatRef k, FloatRef v, FloatRef dout, const float* lse,
                          const float* delta, FloatRef dk, FloatRef dv, AttentionShape s) {
  extern __shared__ float smem[];
  const int d = s.head_dim;
  const int stride = d + 1;
  float* q_tile = smem;
  float* do_tile = q_tile + kTileRows * stride;
  float* k_rows = do_tile + kTileRows * stride;
  float* v_rows = k_rows + kBlockRows * d;
  float* lse_tile = v_rows + kBlockRows * d;
  float* delta_tile = lse_tile + kTileRows;
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int64_t b = blockIdx.y / s.kv_heads;
  const int64_t kvh = blockIdx.y % s.kv_heads;
  const int64_t j0 = blockIdx.x * int64_t{kBlockRows};

  stage_rows(k, b, j0, kBlockRows, s.tk, s.kv_heads, kvh, d, k_rows, d);
  stage_rows(v, b, j0, kBlockRows, s.tk, s.kv_heads, kvh, d, v_rows, d);
  // Queries before the first one that sees this block's first key contribute nothing.
  const int64_t query_begin =
      s.causal ? max(int64_t{0}, min(s.tq, s.k_offset + j0 - s.q_offset)) : 0;

  float dk_acc[kRowsPerWarp][kDimsPerLane] = {};
  float dv_acc[kRowsPerWarp][kDimsPerLane] = {};
  for (int64_t h = kvh * s.group(); h < (kvh + 1) * s.group(); ++h) {
    for (int64_t i0 = query_begin; i0 < s.tq; i0 += kTileRows) {
      __syncthreads();
      stage_rows(q, b, i0, kTileRows, s.tq, s.heads, h, d, q_tile, stride);
      stage_rows(dout, b, i0, kTileRows, s.tq, s.heads, h, d, do_tile, stride);
      stage_scalars(lse, s.lse_index(b, h, 0), i0, s.tq, -INFINITY, lse_tile);
      stage_scalars(delta, s.lse_index(b, h, 0), i0, s.tq, 0.0f, delta_tile);
      __syncthreads();
      const int64_t i = i0 + lane;
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const int row = warp * kRowsPerWarp + r;
        const bool seen = s.visible(i, j0 + row);
        const float qk = seen ? dot(k_rows + row * d, q_tile + lane * stride, d) : 0.0f;
        const float dov = seen ? dot(v_rows + row * d, do_tile + lane * stride, d) : 0.0f;
        const ProbGrad pg = prob_and_grad(seen, lse_tile[lane], delta_tile[lane], qk, dov, s.scale);
        accumulate_tile(dv_acc[r], pg.p, do_tile, stride, d);
        accumulate_tile(dk_acc[r], pg.ds, q_tile, stride, d);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t j = j0 + warp * kRowsPerWarp + r;
    if (j >= s.tk) break;
    const int64_t base = head_row(b, j, s.tk, s.kv_heads, kvh, d);
    write_lane_dims(dk, base, dk_acc[r], s.scale, d, /*add=*/true);
    write_lane_dims(dv, base, dv_acc[r], 1.0f, d, /*add=*/true);
  }
}

}  // namespace

void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                        const Tensor& lse, const Tensor& dout, float scale, bool causal,
                        int64_t q_offset, int64_t k_offset, Tensor& dq, Tensor& dk, Tensor& dv) {
  const AttentionShape s = attention_shape(q, k, scale, causal, q_offset, k_offset);
  if (s.batch * s.heads * s.tq * s.tk == 0) return;
  const int d = s.head_dim;
  const int stride = d + 1;
  constexpr int kThreadsPerBlock = kWarps * kWarp;

  Tensor delta = Tensor::empty({s.batch, s.heads, s.tq}, DType::kF32, q.device());  // [B,H,Tq]
  attention_delta_kernel<<<warp_grid_for(s.batch * s.tq * s.heads, kThreadsPerBlock),
                           kThreadsPerBlock, 0, compute_stream()>>>(float_ref(o), float_ref(dout),
                                                                    delta.data<float>(), s);
  WEFT_CUDA_LAUNCH_CHECK();

  const size_t dq_smem = sizeof(float) * (2 * kTileRows * stride + 2 * kBlockRows * d);
  allow_shared_bytes(attention_dq_kernel, dq_smem);
  const dim3 dq_grid(static_cast<unsigned>((s.tq + kBlockRows - 1) / kBlockRows),
                     static_cast<unsigned>(s.batch * s.heads));
  attention_dq_kernel<<<dq_grid, kThreadsPerBlock, dq_smem, compute_stream()>>>(
      float_ref(q), float_ref(k), float_ref(v), float_ref(dout), lse.data<float>(),
      delta.data<float>(), float_ref(dq), s);
  WEFT_CUDA_LAUNCH_CHECK();

  const size_t dkdv_smem =
      sizeof(float) * (2 * kTileRows * stride + 2 * kBlockRows * d + 2 * kTileRows);
  allow_shared_bytes(attention_dkdv_kernel, dkdv_smem);
  const dim3 dkdv_grid(static_cast<unsigned>((s.tk + kBlockRows - 1) / kBlockRows),
                       static_cast<unsigned>(s.batch * s.kv_heads));
  attention_dkdv_kernel<<<dkdv_grid, kThreadsPerBlock, dkdv_smem, compute_stream()>>>(
      float_ref(q), float_ref(k), float_ref(v), float_ref(dout), lse.data<float>(),
      delta.data<float>(), float_ref(dk), float_ref(dv), s);
  WEFT_CUDA_LAUNCH_CHECK();
}

}  // namespace weft::kernels::cuda
