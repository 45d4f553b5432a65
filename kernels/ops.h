// The math weft runs on tensors. Each function checks shapes and dtypes, then dispatches on the
// tensors' device: kernels/cpu (f32, OpenBLAS + plain C++) or kernels/cuda (cuBLASLt + .cu;
// floating inputs may be f32 or bf16, accumulation is always f32).
//
// Conventions, everywhere below:
//   - Row-major, contiguous tensors; shapes are given in the comments.
//   - Outputs are passed in pre-allocated by the caller, with the documented shape.
//   - "writes" means the output is overwritten; "adds" means it is accumulated into (+=), so
//     the caller zeroes it once and many calls may add (parameter grads, ring attention's dK/dV).
//   - Token-major activations: x [N, D] with N = B*T tokens; attention tensors [B, T, heads, d].
//   - Integer index tensors (ids, targets, positions) may be i32 or i64.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/core/tensor.h"

namespace weft::kernels {

// ---- dense algebra ----------------------------------------------------------------------

// c[M,N] = alpha * op(a) @ op(b) + beta * c, op = transpose when the flag is set.
// a is [M,K] (or [K,M] if trans_a), b is [K,N] (or [N,K] if trans_b). 2-D views only.
void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
          float alpha = 1.0f, float beta = 0.0f);

// y[N,out] = x[N,in] @ w[out,in]^T (+ bias[out]). HF weight layout. Writes y.
// In batch-invariant mode (below) the CPU path computes rows in padded tiles of a fixed size.
void linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y);
// Writes dx[N,in] = dy @ w (when dx != nullptr); adds dw[out,in] += dy^T @ x and
// db[out] += sum over rows of dy (each when non-null).
void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                     Tensor* db);

// ---- elementwise --------------------------------------------------------------------------

void add(const Tensor& a, const Tensor& b, Tensor& out);     // out = a + b (same shape)
void add_(Tensor& a, const Tensor& b, float alpha = 1.0f);   // a += alpha * b
void mul_add_(Tensor& a, const Tensor& b, const Tensor& c);  // a = b * a + c, elementwise
void scale_(Tensor& a, float alpha);                         // a *= alpha
void fill_(Tensor& a, float value);                          // a[:] = value
double sum_squares(const Tensor& a);                         // sum a^2, in double

// ---- normalisation --------------------------------------------------------------------------

// y[N,D] = x * rstd * w with rstd[N] = 1/sqrt(mean_j x^2 + eps). Writes y and rstd (f32).
void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y, Tensor& rstd);
// Writes dx[N,D]; adds dw[D].
void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy,
                      Tensor& dx, Tensor& dw);

// ---- rotary embedding (HF rotate-half over the whole head dim) --------------------------------

// In place on x[B,T,H,d]: for token t at position p = positions[t] and pair i < d/2 with
// angle = float(p) * inv_freq[i] (f32, as Hugging Face), c = cos(angle) * attention_factor and
// s = sin(angle) * attention_factor: (x_i, x_{i+d/2}) -> (x_i c - x_{i+d/2} s, x_{i+d/2} c + x_i
// s). positions [T] (shared by the batch); any positions, so zigzag layouts work. inv_freq f32
// [d/2] (every token), or [T, d/2] (a row per token), on x's device (models/rotary_embedding.h
// computes it: 1 / theta^(2i/d) for plain RoPE).
void rope_forward(Tensor& x, const Tensor& positions, const Tensor& inv_freq,
                  float attention_factor);
// In place: the transpose (rotation by -angle, the same factor), turning dy into dx.
void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& inv_freq,
                   float attention_factor);

// ---- softmax attention ------------------------------------------------------------------------

// q[B,Tq,H,d], k/v[B,Tk,Hkv,d] with H % Hkv == 0 (query head h reads kv head h / (H/Hkv)).
// Query i sits at position q_offset + i, key j at k_offset + j; when causal, key j is visible
// to query i iff k_offset + j <= q_offset + i. Scores are scale * q.k.
// Writes o[B,Tq,H,d] and lse[B,H,Tq] (f32, natural log-sum-exp of the visible scaled scores).
// A query that sees no key gets o = 0 and lse = -inf.
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale, bool causal,
                       int64_t q_offset, int64_t k_offset, Tensor& o, Tensor& lse);
// Backward with a GIVEN (o, lse) — they may be the final merged result of several blocks (ring
// attention): P = exp(scale*S - lse), D_i = rowsum(dO_i * o_i), dS = P * (dP - D).
// ADDS into dq[B,Tq,H,d], dk[B,Tk,Hkv,d], dv[B,Tk,Hkv,d].
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                        const Tensor& lse, const Tensor& dout, float scale, bool causal,
                        int64_t q_offset, int64_t k_offset, Tensor& dq, Tensor& dk, Tensor& dv);

// Merges a block's partial attention into a running one (log-sum-exp merge, f32):
// lse' = logaddexp(lse, lse_b); o' = exp(lse - lse') o + exp(lse_b - lse') o_b.
// o, o_b [B,T,H,d]; lse, lse_b [B,H,T]. Updates o and lse in place. -inf entries are handled.
void attention_merge(Tensor& o, Tensor& lse, const Tensor& o_b, const Tensor& lse_b);

// ---- batch invariance (serving; docs/serving.md) ---------------------------------------------
// BLAS picks its inner kernel by the number of rows, so a row's y = x @ w^T can change in the
// last bits with the rows it shares a call with. Serving turns this mode on (process-wide) so a
// request's tokens do not depend on the batch: the CPU linear_forward then multiplies exactly
// kInvariantRows rows per BLAS call (the last tile zero-padded), a shape in which each row's
// result is independent of the others. Every other kernel on the serving path is per row.
inline constexpr int64_t kInvariantRows = 8;
void set_batch_invariant(bool on);

// bf16 compute (--precision bf16; docs/architecture.md "Precision"): GEMM and
// linear inputs (activations, weights, output gradients) are rounded to bf16 before an f32
// GEMM, which is what a bf16 GEMM with f32 accumulation computes; linear and embedding outputs
// and the activation gradients of a linear are rounded to bf16 as a bf16 store would; weight
// gradients accumulate in f32, the weights and AdamW state stay f32 (the master copy). Memory is
// not saved on the CPU path (values stay in f32 tensors). On CUDA the GEMM inputs are cast to
// bf16 tensors, which cuBLASLt multiplies on the tensor cores with f32 accumulation, and outputs
// are rounded through a bf16 cast: the same values as the CPU emulation up to summation order.
// Process-wide; off by default.
void set_bf16_compute(bool on);
[[nodiscard]] bool bf16_compute();
[[nodiscard]] bool batch_invariant();

// ---- paged KV cache (serving; docs/serving.md)
// --------------------------------------------------- A step's tokens of several requests,
// flattened with no padding: token i belongs to request seq[i], at position pos[i] of it. The
// caches are [num_blocks, block_size, Hkv, d]; position t of request r lives in block
// block_tables[r, t / block_size] at offset t % block_size.

// Writes the step's k, v [N, Hkv, d] into the caches at slots[i] = block * block_size + offset.
void kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& slots, Tensor& k_cache,
                    Tensor& v_cache);
// o[N, H, d]: each token's query q[N, H, d] attends (causally) to positions 0..pos[i] of its
// request, read through the block table; GQA as above. seq, pos [N] and block_tables
// [R, max_blocks] are i32 or i64. Softmax in f32, one token and head at a time in a fixed order,
// so a token's output does not depend on what else is in the batch.
void paged_attention_forward(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                             const Tensor& block_tables, const Tensor& seq, const Tensor& pos,
                             float scale, Tensor& o);

// ---- linear attention (decayed, chunked, with a carried state) ---------------------------------

// Per query head h with decay g = gamma[h] and local positions t = 0..T-1:
//   o_t = scale * sum_{u<=t} g^(t-u) (q_t . k_u) v_u  +  scale * g^(t+1) q_t S_in
// q[B,T,H,d], k/v[B,T,Hkv,d] (GQA as above), gamma: H values (global head decays; with head
// sharding the caller passes its own heads' values). s_in[B,H,d,d] may be undefined (= zero).
// Computed in chunks of `chunk` positions (intra-chunk quadratic, inter-chunk carried state).
// Writes o[B,T,H,d] and m_local[B,H,d,d] = sum_j g^(T-1-j) k_j^T v_j (the local state M), so
// that S_out = g^T S_in + M.
void linear_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                              const std::vector<float>& gamma, float scale, const Tensor& s_in,
                              int64_t chunk, Tensor& o, Tensor& m_local);
// Given dout[B,T,H,d] and ds_out[B,H,d,d] (gradient flowing into S_out; may be undefined = 0):
// ADDS into dq, dk[B,T,Hkv,d], dv[B,T,Hkv,d] (all terms: intra, through S_in, through S_out),
// and WRITES ds_in[B,H,d,d] = N + g^T ds_out with N = scale * sum_i g^(i+1) q_i^T dO_i.
void linear_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                               const std::vector<float>& gamma, float scale, const Tensor& s_in,
                               const Tensor& dout, const Tensor& ds_out, int64_t chunk, Tensor& dq,
                               Tensor& dk, Tensor& dv, Tensor& ds_in);

// ---- MLP ----------------------------------------------------------------------------------

// h[N,F] = silu(gate) * up. Writes h.
void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& h);
// Writes dgate[N,F], dup[N,F].
void swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dh, Tensor& dgate,
                     Tensor& dup);

// ---- embedding and loss ------------------------------------------------------------------------

// out[N,D] = table[ids - vocab_start] for ids inside [vocab_start, vocab_start + V_local),
// zero rows otherwise (vocabulary-parallel). table [V_local, D]. Writes out.
void embedding_forward(const Tensor& ids, const Tensor& table, int64_t vocab_start, Tensor& out);
// Adds dout rows into dtable for ids inside the local range.
void embedding_backward(const Tensor& ids, const Tensor& dout, int64_t vocab_start, Tensor& dtable);

// Row-wise over logits[N,V_local] covering vocabulary ids [vocab_start, vocab_start+V_local).
// Writes lse[N] (log-sum-exp of the local row) and target_logit[N] (the logit of targets[n]
// when it is local, else 0). A target < 0 means "no label" (both still written; the caller
// leaves that row out). One-rank loss of row n: lse[n] - target_logit[n].
void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                           Tensor& lse, Tensor& target_logit);
// Writes dlogits[N,V_local] = row_scale[n] * (exp(logits - lse[n]) - onehot(target)), with the
// GIVEN lse (global under vocabulary parallelism). Rows with target < 0 get zero.
// row_scale [N] f32 (usually 1/num_predicted for labelled rows).
void cross_entropy_backward(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                            const Tensor& lse, const Tensor& row_scale, Tensor& dlogits);

// Row-wise softmax of x[N,C] into y[N,C]; backward writes dx = y * (dy - rowsum(dy*y)).
void softmax_forward(const Tensor& x, Tensor& y);
void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx);

// ---- MoE routing --------------------------------------------------------------------------------

// logits[N,E] -> probs[N,E] = softmax; idx[N,k] (i32) the k largest probs (ties: lower expert
// first), weights[N,k] = those probs, divided by their sum when renormalize. Writes all three.
void topk_router_forward(const Tensor& logits, int k, bool renormalize, Tensor& probs, Tensor& idx,
                         Tensor& weights);
// dweights[N,k] -> writes dlogits[N,E] through the renormalisation and the softmax.
void topk_router_backward(const Tensor& probs, const Tensor& idx, const Tensor& weights,
                          const Tensor& dweights, bool renormalize, Tensor& dlogits);

// ---- optimizer
// ------------------------------------------------------------------------------------

struct AdamWConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
};
// torch.optim.AdamW, step counted from 1: p *= 1 - lr*wd; m = b1 m + (1-b1) g;
// v = b2 v + (1-b2) g^2; p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
// param, grad, m, v: same shape, f32.
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& cfg,
                int64_t step);

}  // namespace weft::kernels
