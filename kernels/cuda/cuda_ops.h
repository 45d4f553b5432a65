// CUDA implementations (cuBLASLt for GEMM, .cu kernels for the rest; f32 or bf16
// storage, f32 accumulation). Plain C++ declarations: callers need no CUDA headers.
// Same names and contracts as kernels/ops.h, which checks shapes and dispatches here; these
// functions may assume the checks passed and that every tensor is on the right device.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace weft::kernels::cuda {

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
          float beta);
void linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y);
void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                     Tensor* db);
void add(const Tensor& a, const Tensor& b, Tensor& out);
void add_(Tensor& a, const Tensor& b, float alpha);
void scale_(Tensor& a, float alpha);
void fill_(Tensor& a, float value);
double sum_squares(const Tensor& a);
void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y, Tensor& rstd);
void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy,
                      Tensor& dx, Tensor& dw);
void rope_forward(Tensor& x, const Tensor& positions, float theta);
void rope_backward(Tensor& dx, const Tensor& positions, float theta);
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale, bool causal,
                       int64_t q_offset, int64_t k_offset, Tensor& o, Tensor& lse);
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                        const Tensor& lse, const Tensor& dout, float scale, bool causal,
                        int64_t q_offset, int64_t k_offset, Tensor& dq, Tensor& dk, Tensor& dv);
void attention_merge(Tensor& o, Tensor& lse, const Tensor& o_b, const Tensor& lse_b);
void linear_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                              const std::vector<float>& gamma, float scale, const Tensor& s_in,
                              int64_t chunk, Tensor& o, Tensor& m_local);
void linear_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                               const std::vector<float>& gamma, float scale, const Tensor& s_in,
                               const Tensor& dout, const Tensor& ds_out, int64_t chunk, Tensor& dq,
                               Tensor& dk, Tensor& dv, Tensor& ds_in);
void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& h);
void swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dh, Tensor& dgate,
                     Tensor& dup);
void embedding_forward(const Tensor& ids, const Tensor& table, int64_t vocab_start, Tensor& out);
void embedding_backward(const Tensor& ids, const Tensor& dout, int64_t vocab_start, Tensor& dtable);
void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                           Tensor& lse, Tensor& target_logit);
void cross_entropy_backward(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                            const Tensor& lse, const Tensor& row_scale, Tensor& dlogits);
void softmax_forward(const Tensor& x, Tensor& y);
void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx);
void topk_router_forward(const Tensor& logits, int k, bool renormalize, Tensor& probs, Tensor& idx,
                         Tensor& weights);
void topk_router_backward(const Tensor& probs, const Tensor& idx, const Tensor& weights,
                          const Tensor& dweights, bool renormalize, Tensor& dlogits);
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& cfg,
                int64_t step);

}  // namespace weft::kernels::cuda
