// Building blocks of the flash-attention-style kernels (attention.cu, attention_backward.cu);
// linear_attention.cu shares the staging and dot helpers.
//
// Work split: a block owns kBlockRows "own" rows of one head (query rows in the forward and in
// dQ, key rows in dK/dV); each of its kWarps warps owns kRowsPerWarp of them. The block walks
// over the other side (keys, or queries) in tiles of kTileRows = 32 rows staged in shared
// memory as f32, one tile row per lane: lane j scores its own tile row against the warp's own
// rows, and the warp then accumulates sum_j coef_j * tile_j into per-lane slices of the head
// dimension (lane l holds dims l, l + 32, ...). Tile rows are padded to d + 1 floats so that
// lane j reading row j hits a distinct bank.
#pragma once

#include "kernels/cuda/cuda_common.cuh"

namespace weft::kernels::cuda {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 2;
constexpr int kBlockRows = kWarps * kRowsPerWarp;
constexpr int kTileRows = kWarp;
constexpr int kMaxHeadDim = 256;
constexpr int kDimsPerLane = kMaxHeadDim / kWarp;

// The shapes of one attention call: q[B,Tq,H,d], k/v[B,Tk,Hkv,d], lse[B,H,Tq].
struct AttentionShape {
  int64_t batch;
  int64_t tq;
  int64_t tk;
  int64_t heads;
  int64_t kv_heads;
  int head_dim;
  float scale;
  bool causal;
  int64_t q_offset;
  int64_t k_offset;

  __device__ int64_t group() const { return heads / kv_heads; }
  // Query i sees key j (both in range).
  __device__ bool visible(int64_t i, int64_t j) const {
    return i < tq && j < tk && (!causal || k_offset + j <= q_offset + i);
  }
  __device__ int64_t lse_index(int64_t b, int64_t h, int64_t i) const {
    return (b * heads + h) * tq + i;
  }
};

// Flat offset of element 0 of row t, head h, batch b of a [B, T, heads, d] tensor.
__device__ inline int64_t head_row(int64_t b, int64_t t, int64_t seq, int64_t heads, int64_t h,
                                   int head_dim) {
  return ((b * seq + t) * heads + h) * head_dim;
}

// Stages rows [t0, t0 + rows) of head h of src[B, seq, heads, d] into dst[rows][stride] as f32.
// Rows at or past `seq` become zeros (so a partial tile contributes nothing). Whole block.
__device__ inline void stage_rows(FloatRef src, int64_t b, int64_t t0, int rows, int64_t seq,
                                  int64_t heads, int64_t h, int head_dim, float* dst, int stride) {
  for (int idx = threadIdx.x; idx < rows * head_dim; idx += blockDim.x) {
    const int r = idx / head_dim;
    const int c = idx % head_dim;
    const int64_t t = t0 + r;
    dst[r * stride + c] = t < seq ? src.load(head_row(b, t, seq, heads, h, head_dim) + c) : 0.0f;
  }
}

// Stages 32 per-row scalars (lse or the row sums D) of head h; rows past `seq` get `fill`.
__device__ inline void stage_scalars(const float* src, int64_t offset, int64_t t0, int64_t seq,
                                     float fill, float* dst) {
  if (threadIdx.x < kTileRows) {
    const int64_t t = t0 + threadIdx.x;
    dst[threadIdx.x] = t < seq ? src[offset + t] : fill;
  }
}

// a . b over head_dim entries (a is read by every lane alike: a shared-memory broadcast).
__device__ inline float dot(const float* a, const float* b, int head_dim) {
  float acc = 0.0f;
  for (int c = 0; c < head_dim; ++c) acc += a[c] * b[c];
  return acc;
}

// acc[dims of this lane] += sum_j coef(lane j) * tile[j][dims].
__device__ inline void accumulate_tile(float (&acc)[kDimsPerLane], float coef, const float* tile,
                                       int stride, int head_dim) {
  const int lane = threadIdx.x % kWarp;
  for (int j = 0; j < kTileRows; ++j) {
    const float cj = __shfl_sync(kFullMask, coef, j);
    if (cj == 0.0f) continue;  // uniform across the warp
#pragma unroll
    for (int t = 0; t < kDimsPerLane; ++t) {
      const int c = lane + t * kWarp;
      if (c < head_dim) acc[t] += cj * tile[j * stride + c];
    }
  }
}

// out[base + dims of this lane] = factor * acc, or += when `add` (read-modify-write: each row
// has one owning warp).
__device__ inline void write_lane_dims(FloatRef out, int64_t base, const float (&acc)[kDimsPerLane],
                                       float factor, int head_dim, bool add) {
  const int lane = threadIdx.x % kWarp;
#pragma unroll
  for (int t = 0; t < kDimsPerLane; ++t) {
    const int c = lane + t * kWarp;
    if (c < head_dim) {
      const float v = factor * acc[t];
      out.store(base + c, add ? out.load(base + c) + v : v);
    }
  }
}

// Sets the dynamic shared-memory limit of `kernel` (above 48 KiB needs an opt-in).
template <typename Kernel>
inline void allow_shared_bytes(Kernel kernel, size_t bytes) {
  WEFT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(bytes)));
}

inline AttentionShape attention_shape(const Tensor& q, const Tensor& k, float scale, bool causal,
                                      int64_t q_offset, int64_t k_offset) {
  const int64_t head_dim = q.dim(3);
  WEFT_CHECK(head_dim >= 1 && head_dim <= kMaxHeadDim)
      << "CUDA attention supports head_dim up to " << kMaxHeadDim << ", got " << q.str();
  // Grids put batch x heads on their y dimension.
  WEFT_CHECK(q.dim(0) * q.dim(2) <= 65535)
      << "CUDA attention supports batch x heads up to 65535, got " << q.str();
  return {q.dim(0), q.dim(1), k.dim(1), q.dim(2), k.dim(2), static_cast<int>(head_dim),
          scale,    causal,   q_offset, k_offset};
}

}  // namespace weft::kernels::cuda
