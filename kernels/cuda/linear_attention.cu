// Decayed linear attention in chunks (the formulas of kernels/ops.h and docs/algorithms.md, "Linear
// attention in chunks"). One block per (batch, head) walks the sequence chunk by chunk: the
// intra-chunk part is quadratic in shared memory, the rest goes through a d x d f32 state kept
// in global scratch that the block alone owns.
//
// Chunks have min(chunk, kMaxChunk) positions: the result does not depend on the chunking beyond
// f32 rounding, and the cap bounds shared memory.
//
// Per head with decay g, over a chunk of L positions starting at t0 (local t, u in [0, L)):
//   forward  o_t  = s [ sum_{u<=t} g^(t-u) (q_t.k_u) v_u + g^(t+1) q_t M + g^(t0+t+1) q_t S_in ]
//            M   <- g^L M + sum_u g^(L-1-u) k_u^T v_u          (M: the local state so far)
//   backward dq_t += s [ sum_{u<=t} g^(t-u) (dO_t.v_u) k_u + g^(t+1) M dO_t + g^(t0+t+1) S_in dO_t
//   ]
//            (scanning forward), and scanning backward with E = dS_out at the end:
//            dk_u += s sum_{t>=u} g^(t-u) (dO_t.v_u) q_t + g^(L-1-u) E v_u
//            dv_u += s sum_{t>=u} g^(t-u) (q_t.k_u) dO_t + g^(L-1-u) k_u E
//            E   <- g^L E + s sum_t g^(t+1) q_t^T dO_t             (E at position 0 is dS_in)
#include "kernels/cuda/attention_tile.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace weft::kernels::cuda {
namespace {

constexpr int kMaxChunk = 32;
constexpr int kLinearThreads = 256;

struct LinearShape {
  int64_t batch;
  int64_t seq;
  int64_t heads;
  int64_t kv_heads;
  int head_dim;
  int chunk;
  float scale;

  __device__ int stride() const { return head_dim + 1; }
  __device__ int64_t state_index(int64_t b, int64_t h) const {
    return (b * heads + h) * head_dim * head_dim;
  }
};

// Shared-memory carve-up: `rows` staged [chunk][d+1] tensors, `mats` [chunk][chunk] score
// matrices, the powers g^0..g^chunk and per-position weights.
struct ChunkSmem {
  float* rows[4];
  float* mats[2];
  float* pow_g;
  float* weights;
};

__host__ __device__ inline size_t chunk_smem_floats(int n_rows, int n_mats, int chunk,
                                                    int head_dim) {
  return size_t(n_rows) * chunk * (head_dim + 1) + size_t(n_mats) * chunk * chunk +
         2 * size_t(chunk) + 1;
}

__device__ inline ChunkSmem carve(float* smem, int n_rows, int n_mats, const LinearShape& s) {
  ChunkSmem c{};
  float* p = smem;
  for (int i = 0; i < n_rows; ++i, p += s.chunk * s.stride()) c.rows[i] = p;
  for (int i = 0; i < n_mats; ++i, p += s.chunk * s.chunk) c.mats[i] = p;
  c.pow_g = p;
  c.weights = p + s.chunk + 1;
  return c;
}

// pow_g[n] = g^n for n in [0, chunk]. Whole block; caller syncs.
__device__ inline void fill_powers(float* pow_g, float g, int chunk) {
  for (int n = threadIdx.x; n <= chunk; n += blockDim.x) pow_g[n] = powf(g, static_cast<float>(n));
}

// out[t][u] = g^(t-u) x_t . y_u for u <= t < lc, else 0. x, y staged [chunk][d+1].
__device__ inline void decayed_scores(float* out, const float* x, const float* y, int lc,
                                      const float* pow_g, const LinearShape& s) {
  for (int idx = threadIdx.x; idx < s.chunk * s.chunk; idx += blockDim.x) {
    const int t = idx / s.chunk;
    const int u = idx % s.chunk;
    out[idx] = u <= t && t < lc
                   ? pow_g[t - u] * dot(x + t * s.stride(), y + u * s.stride(), s.head_dim)
                   : 0.0f;
  }
}

// sum_u m[row][u] y[u][col], or sum_u m[u][row] y[u][col] when `transposed`.
__device__ inline float mat_apply(const float* m, bool transposed, const float* y, int row, int col,
                                  int lc, const LinearShape& s) {
  float acc = 0.0f;
  for (int u = 0; u < lc; ++u) {
    acc += (transposed ? m[u * s.chunk + row] : m[row * s.chunk + u]) * y[u * s.stride() + col];
  }
  return acc;
}

// (x^T S)[col] = sum_a x[a] S[a][col], or (S x)[col] = sum_a S[col][a] x[a] when `transposed`.
// S is a [d][d] matrix in global memory at `offset` (a running state, or S_in); x a staged row.
__device__ inline float state_apply(FloatRef state, int64_t offset, bool transposed, const float* x,
                                    int col, int head_dim) {
  float acc = 0.0f;
  for (int a = 0; a < head_dim; ++a) {
    acc += x[a] * state.load(offset + (transposed ? col * head_dim + a : a * head_dim + col));
  }
  return acc;
}

// state[a][c] = decay * state[a][c] + sum_{u<lc} w[u] x[u][a] y[u][c]. Whole block; each thread
// owns its entries.
__device__ inline void advance_state(float* state, float decay, const float* weights,
                                     const float* x, const float* y, int lc, const LinearShape& s) {
  const int d = s.head_dim;
  for (int idx = threadIdx.x; idx < d * d; idx += blockDim.x) {
    const int a = idx / d;
    const int c = idx % d;
    float acc = 0.0f;
    for (int u = 0; u < lc; ++u) acc += weights[u] * x[u * s.stride() + a] * y[u * s.stride() + c];
    state[idx] = decay * state[idx] + acc;
  }
}

// state = src (or 0 when src is null), converted to f32. Whole block.
__device__ inline void init_state(float* state, FloatRef src, int64_t offset, int head_dim) {
  for (int idx = threadIdx.x; idx < head_dim * head_dim; idx += blockDim.x) {
    state[idx] = src.data != nullptr ? src.load(offset + idx) : 0.0f;
  }
}

// Grid B * H. Scratch `states` [B,H,d,d] f32 holds each block's running M.
__global__ void linear_attention_forward_kernel(FloatRef q, FloatRef k, FloatRef v,
                                                const float* gamma, FloatRef s_in, FloatRef o,
                                                FloatRef m_local, float* states, LinearShape s) {
  extern __shared__ float smem[];
  const ChunkSmem sm = carve(smem, 3, 1, s);
  float* q_c = sm.rows[0];
  float* k_c = sm.rows[1];
  float* v_c = sm.rows[2];
  float* scores = sm.mats[0];
  const int d = s.head_dim;
  const int64_t b = blockIdx.x / s.heads;
  const int64_t h = blockIdx.x % s.heads;
  const int64_t kvh = h / (s.heads / s.kv_heads);
  const float g = gamma[h];
  const int64_t state_at = s.state_index(b, h);
  float* m_state = states + state_at;
  const FloatRef m_ref{m_state, DType::kF32};

  init_state(m_state, FloatRef{}, 0, d);
  fill_powers(sm.pow_g, g, s.chunk);
  for (int64_t t0 = 0; t0 < s.seq; t0 += s.chunk) {
    const int lc = static_cast<int>(min(int64_t{s.chunk}, s.seq - t0));
    __syncthreads();  // the previous chunk's state update is complete
    stage_rows(q, b, t0, s.chunk, s.seq, s.heads, h, d, q_c, s.stride());
    stage_rows(k, b, t0, s.chunk, s.seq, s.kv_heads, kvh, d, k_c, s.stride());
    stage_rows(v, b, t0, s.chunk, s.seq, s.kv_heads, kvh, d, v_c, s.stride());
    for (int u = threadIdx.x; u < lc; u += blockDim.x) sm.weights[u] = sm.pow_g[lc - 1 - u];
    __syncthreads();
    decayed_scores(scores, q_c, k_c, lc, sm.pow_g, s);
    __syncthreads();
    for (int idx = threadIdx.x; idx < lc * d; idx += blockDim.x) {
      const int t = idx / d;
      const int c = idx % d;
      const float* q_t = q_c + t * s.stride();
      float acc = mat_apply(scores, false, v_c, t, c, lc, s) +
                  sm.pow_g[t + 1] * state_apply(m_ref, 0, false, q_t, c, d);
      if (s_in.data != nullptr) {
        acc +=
            powf(g, static_cast<float>(t0 + t + 1)) * state_apply(s_in, state_at, false, q_t, c, d);
      }
      o.store(head_row(b, t0 + t, s.seq, s.heads, h, d) + c, s.scale * acc);
    }
    __syncthreads();  // every read of the old state is done
    advance_state(m_state, sm.pow_g[lc], sm.weights, k_c, v_c, lc, s);
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < d * d; idx += blockDim.x) {
    m_local.store(state_at + idx, m_state[idx]);
  }
}

// Grid B * Hkv: the block sums dk/dv over the query heads sharing its KV head into f32 scratch
// dk_acc/dv_acc [B,T,Hkv,d]. Scratch `states` [B,Hkv,d,d] f32 holds M, then E.
__global__ void linear_attention_backward_kernel(FloatRef q, FloatRef k, FloatRef v,
                                                 const float* gamma, FloatRef s_in, FloatRef dout,
                                                 FloatRef ds_out, FloatRef dq, float* dk_acc,
                                                 float* dv_acc, FloatRef ds_in, float* states,
                                                 LinearShape s) {
  extern __shared__ float smem[];
  const ChunkSmem sm = carve(smem, 4, 2, s);
  float* q_c = sm.rows[0];
  float* k_c = sm.rows[1];
  float* v_c = sm.rows[2];
  float* do_c = sm.rows[3];
  float* qk = sm.mats[0];   // g^(t-u) q_t.k_u
  float* dov = sm.mats[1];  // g^(t-u) dO_t.v_u
  const int d = s.head_dim;
  const int64_t group = s.heads / s.kv_heads;
  const int64_t b = blockIdx.x / s.kv_heads;
  const int64_t kvh = blockIdx.x % s.kv_heads;
  float* state = states + (b * s.kv_heads + kvh) * d * d;
  const FloatRef state_ref{state, DType::kF32};
  const int64_t n_chunks = (s.seq + s.chunk - 1) / s.chunk;

  auto stage_chunk = [&](int64_t t0, int64_t h) {
    __syncthreads();  // the previous chunk is fully used
    stage_rows(q, b, t0, s.chunk, s.seq, s.heads, h, d, q_c, s.stride());
    stage_rows(k, b, t0, s.chunk, s.seq, s.kv_heads, kvh, d, k_c, s.stride());
    stage_rows(v, b, t0, s.chunk, s.seq, s.kv_heads, kvh, d, v_c, s.stride());
    stage_rows(dout, b, t0, s.chunk, s.seq, s.heads, h, d, do_c, s.stride());
    __syncthreads();
  };

  for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
    const float g = gamma[h];
    const int64_t state_at = s.state_index(b, h);
    __syncthreads();  // the previous head is done with the powers and the state
    fill_powers(sm.pow_g, g, s.chunk);
    init_state(state, FloatRef{}, 0, d);

    // Forward scan: dq, with M the state of the chunks before.
    for (int64_t c0 = 0; c0 < n_chunks; ++c0) {
      const int64_t t0 = c0 * s.chunk;
      const int lc = static_cast<int>(min(int64_t{s.chunk}, s.seq - t0));
      stage_chunk(t0, h);
      decayed_scores(dov, do_c, v_c, lc, sm.pow_g, s);
      for (int u = threadIdx.x; u < lc; u += blockDim.x) sm.weights[u] = sm.pow_g[lc - 1 - u];
      __syncthreads();
      for (int idx = threadIdx.x; idx < lc * d; idx += blockDim.x) {
        const int t = idx / d;
        const int a = idx % d;
        const float* do_t = do_c + t * s.stride();
        float acc = mat_apply(dov, false, k_c, t, a, lc, s) +
                    sm.pow_g[t + 1] * state_apply(state_ref, 0, true, do_t, a, d);
        if (s_in.data != nullptr) {
          acc += powf(g, static_cast<float>(t0 + t + 1)) *
                 state_apply(s_in, state_at, true, do_t, a, d);
        }
        const int64_t at = head_row(b, t0 + t, s.seq, s.heads, h, d) + a;
        dq.store(at, dq.load(at) + s.scale * acc);
      }
      __syncthreads();
      advance_state(state, sm.pow_g[lc], sm.weights, k_c, v_c, lc, s);
    }

    // Backward scan: dk, dv, with E the gradient of the state after the chunk.
    __syncthreads();
    init_state(state, ds_out, state_at, d);
    for (int64_t c0 = n_chunks - 1; c0 >= 0; --c0) {
      const int64_t t0 = c0 * s.chunk;
      const int lc = static_cast<int>(min(int64_t{s.chunk}, s.seq - t0));
      stage_chunk(t0, h);
      decayed_scores(qk, q_c, k_c, lc, sm.pow_g, s);
      decayed_scores(dov, do_c, v_c, lc, sm.pow_g, s);
      for (int t = threadIdx.x; t < lc; t += blockDim.x) sm.weights[t] = s.scale * sm.pow_g[t + 1];
      __syncthreads();
      for (int idx = threadIdx.x; idx < lc * d; idx += blockDim.x) {
        const int u = idx / d;
        const int c = idx % d;
        const float decay = sm.pow_g[lc - 1 - u];
        const int64_t at = head_row(b, t0 + u, s.seq, s.kv_heads, kvh, d) + c;
        dk_acc[at] += s.scale * mat_apply(dov, true, q_c, u, c, lc, s) +
                      decay * state_apply(state_ref, 0, true, v_c + u * s.stride(), c, d);
        dv_acc[at] += s.scale * mat_apply(qk, true, do_c, u, c, lc, s) +
                      decay * state_apply(state_ref, 0, false, k_c + u * s.stride(), c, d);
      }
      __syncthreads();
      advance_state(state, sm.pow_g[lc], sm.weights, q_c, do_c, lc, s);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < d * d; idx += blockDim.x) {
      ds_in.store(state_at + idx, state[idx]);
    }
  }
}

LinearShape linear_shape(const Tensor& q, const Tensor& k, float scale, int64_t chunk) {
  const int64_t head_dim = q.dim(3);
  WEFT_CHECK(head_dim >= 1 && head_dim <= kMaxHeadDim)
      << "CUDA linear attention supports head_dim up to " << kMaxHeadDim << ", got " << q.str();
  WEFT_CHECK(chunk >= 1) << "chunk " << chunk;
  return {q.dim(0),
          q.dim(1),
          q.dim(2),
          k.dim(2),
          static_cast<int>(head_dim),
          static_cast<int>(std::min<int64_t>(chunk, kMaxChunk)),
          scale};
}

// gamma as a device array [H].
Tensor device_gamma(const std::vector<float>& gamma, Device device) {
  return Tensor::from_floats(gamma, {static_cast<int64_t>(gamma.size())}).to(device);
}

}  // namespace

void linear_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                              const std::vector<float>& gamma, float scale, const Tensor& s_in,
                              int64_t chunk, Tensor& o, Tensor& m_local) {
  const LinearShape s = linear_shape(q, k, scale, chunk);
  const int64_t blocks = s.batch * s.heads;
  if (blocks == 0) return;
  const Tensor g = device_gamma(gamma, q.device());
  Tensor states = Tensor::empty({s.batch, s.heads, s.head_dim, s.head_dim}, DType::kF32,
                                q.device());  // [B,H,d,d] running M
  const size_t smem = sizeof(float) * chunk_smem_floats(3, 1, s.chunk, s.head_dim);
  allow_shared_bytes(linear_attention_forward_kernel, smem);
  linear_attention_forward_kernel<<<static_cast<unsigned>(blocks), kLinearThreads, smem,
                                    compute_stream()>>>(
      float_ref(q), float_ref(k), float_ref(v), g.data<float>(), optional_float_ref(s_in),
      float_ref(o), float_ref(m_local), states.data<float>(), s);
  WEFT_CUDA_LAUNCH_CHECK();
}

void linear_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                               const std::vector<float>& gamma, float scale, const Tensor& s_in,
                               const Tensor& dout, const Tensor& ds_out, int64_t chunk, Tensor& dq,
                               Tensor& dk, Tensor& dv, Tensor& ds_in) {
  const LinearShape s = linear_shape(q, k, scale, chunk);
  const int64_t blocks = s.batch * s.kv_heads;
  if (blocks == 0 || s.heads == 0) return;
  const Tensor g = device_gamma(gamma, q.device());
  Tensor states = Tensor::empty({s.batch, s.kv_heads, s.head_dim, s.head_dim}, DType::kF32,
                                q.device());                          // [B,Hkv,d,d] M, then E
  Tensor dk_acc = Tensor::zeros(k.shape(), DType::kF32, k.device());  // [B,T,Hkv,d]
  Tensor dv_acc = Tensor::zeros(v.shape(), DType::kF32, v.device());  // [B,T,Hkv,d]
  const size_t smem = sizeof(float) * chunk_smem_floats(4, 2, s.chunk, s.head_dim);
  allow_shared_bytes(linear_attention_backward_kernel, smem);
  linear_attention_backward_kernel<<<static_cast<unsigned>(blocks), kLinearThreads, smem,
                                     compute_stream()>>>(
      float_ref(q), float_ref(k), float_ref(v), g.data<float>(), optional_float_ref(s_in),
      float_ref(dout), optional_float_ref(ds_out), float_ref(dq), dk_acc.data<float>(),
      dv_acc.data<float>(), float_ref(ds_in), states.data<float>(), s);
  WEFT_CUDA_LAUNCH_CHECK();
  add_(dk, dk_acc, 1.0f);
  add_(dv, dv_acc, 1.0f);
}

}  // namespace weft::kernels::cuda
