#include "models/softmax_attention.h"

#include <cmath>

#include "kernels/ops.h"

namespace weft::models {

struct SoftmaxAttention::Saved : LayerSaved {
  TokenBatch batch;
  Tensor x;                                        // [N, D] the layer input
  QkvHeads qkv;                                    // after RoPE
  Tensor o;                                        // [B, T, H, d]
  Tensor lse;                                      // [B, H, T] (whole-sequence attention)
  std::unique_ptr<parallel::SpAttentionSaved> sp;  // sequence-parallel attention
};

// Per sequence b: k[b], v[b] [max_len, Hkv, d]. Separate tensors so that the first `len` rows of
// one sequence are a contiguous view the attention kernel can read.
class SoftmaxAttention::KvCache final : public MixerCache {
 public:
  KvCache(int64_t batch, int64_t max_len, int64_t kv_heads, int64_t head_dim) {
    for (int64_t b = 0; b < batch; ++b) {
      k.push_back(Tensor::empty({max_len, kv_heads, head_dim}));
      v.push_back(Tensor::empty({max_len, kv_heads, head_dim}));
    }
  }
  std::vector<Tensor> k, v;
};

class SoftmaxAttention::PagedCache final : public MixerCache {
 public:
  PagedCache(int64_t num_blocks, int64_t block_size, int64_t kv_heads, int64_t head_dim)
      : k(Tensor::zeros({num_blocks, block_size, kv_heads, head_dim})),
        v(Tensor::zeros({num_blocks, block_size, kv_heads, head_dim})) {}
  [[nodiscard]] std::pair<Tensor, Tensor> paged_kv() const override { return {k, v}; }
  Tensor k, v;
};

SoftmaxAttention::SoftmaxAttention(const io::ModelConfig& config, int64_t layer,
                                   const TpContext& tp, parallel::SequenceParallelAttention* sp,
                                   bool recompute_core)
    : proj_(config, layer, tp),
      sp_(sp),
      rope_(config),
      scale_(1.0f / std::sqrt(static_cast<float>(config.head_dim))),
      recompute_core_(recompute_core) {}

Tensor SoftmaxAttention::forward(const TokenBatch& batch, const Tensor& x, MixerCache* cache,
                                 SavedPtr* saved) const {
  QkvHeads qkv = proj_.project_qkv(batch, x);
  rope_.forward(qkv.q, batch);
  rope_.forward(qkv.k, batch);
  std::unique_ptr<parallel::SpAttentionSaved> sp_saved;
  Tensor o, lse;  // o [B, T, H, d], lse [B, H, T]
  if (batch.paged != nullptr) {
    WEFT_CHECK(cache != nullptr && saved == nullptr) << "a paged step needs its cache, no backward";
    o = Tensor::empty(qkv.q.shape());
    attend_paged(*batch.paged, qkv, static_cast<PagedCache&>(*cache), o);
  } else if (sp_ != nullptr && cache == nullptr) {
    o = sp_->forward(qkv.q, qkv.k, qkv.v, saved != nullptr ? &sp_saved : nullptr);
  } else {
    o = Tensor::empty(qkv.q.shape());
    lse = Tensor::empty({batch.batch, proj_.heads(), batch.len});
    if (cache != nullptr) {
      attend_cached(batch, qkv, static_cast<KvCache&>(*cache), o, lse);
    } else {
      attend(qkv, o, lse);
    }
  }
  Tensor y = proj_.project_out(o);
  if (saved != nullptr) {
    WEFT_CHECK(cache == nullptr) << "backward through a KV cache is not supported";
    auto s = std::make_unique<Saved>();
    s->batch = batch;
    s->x = x;
    s->qkv = std::move(qkv);
    if (!recompute_core_ || sp_saved != nullptr) {
      s->o = std::move(o);
      s->lse = std::move(lse);
    }
    s->sp = std::move(sp_saved);
    *saved = std::move(s);
  }
  return y;
}

void SoftmaxAttention::attend(const QkvHeads& qkv, Tensor& o, Tensor& lse) const {
  kernels::attention_forward(qkv.q, qkv.k, qkv.v, scale_, /*causal=*/true, 0, 0, o, lse);
}

void SoftmaxAttention::attend_cached(const TokenBatch& batch, const QkvHeads& qkv, KvCache& cache,
                                     Tensor& o, Tensor& lse) const {
  const int64_t t = batch.len, end = batch.offset + t;
  const Shape rows_shape = {t, proj_.kv_heads(), proj_.head_dim()};     // new rows of one sequence
  const Shape kv_shape = {1, end, proj_.kv_heads(), proj_.head_dim()};  // its whole cache so far
  WEFT_CHECK_LE(end, cache.k[0].dim(0)) << "decoding past the inference state's max_len";
  for (int64_t b = 0; b < batch.batch; ++b) {
    cache.k[b].slice(batch.offset, end).copy_from(qkv.k.slice(b, b + 1).view(rows_shape));
    cache.v[b].slice(batch.offset, end).copy_from(qkv.v.slice(b, b + 1).view(rows_shape));
    Tensor o_b = o.slice(b, b + 1);
    Tensor lse_b = lse.slice(b, b + 1);
    kernels::attention_forward(qkv.q.slice(b, b + 1), cache.k[b].slice(0, end).view(kv_shape),
                               cache.v[b].slice(0, end).view(kv_shape), scale_, /*causal=*/true,
                               batch.offset, 0, o_b, lse_b);
  }
}

void SoftmaxAttention::attend_paged(const PagedBatch& paged, const QkvHeads& qkv, PagedCache& cache,
                                    Tensor& o) const {
  if (paged.ulysses != nullptr) return attend_paged_ulysses(paged, qkv, cache.k, cache.v, o);
  const int64_t n = paged.size(), hkv = proj_.kv_heads(), d = proj_.head_dim();
  kernels::kv_cache_write(qkv.k.view({n, hkv, d}), qkv.v.view({n, hkv, d}), paged.slots, cache.k,
                          cache.v);
  Tensor o3 = o.view({n, proj_.heads(), d});
  kernels::paged_attention_forward(qkv.q.view({n, proj_.heads(), d}), cache.k, cache.v,
                                   paged.block_tables, paged.seq, paged.positions, scale_, o3);
}

Tensor SoftmaxAttention::backward(LayerSaved& saved_base, const Tensor& dy) {
  auto& s = static_cast<Saved&>(saved_base);
  if (!s.o.defined()) {  // --recompute selective: the core again, from the kept q, k, v
    s.o = Tensor::empty(s.qkv.q.shape());
    s.lse = Tensor::empty({s.batch.batch, proj_.heads(), s.batch.len});
    attend(s.qkv, s.o, s.lse);
  }
  const Tensor d_o = proj_.backward_out(s.o, dy);  // [B, T, H, d]
  QkvHeads grads = proj_.zero_grads(s.batch);
  if (s.sp != nullptr) {
    sp_->backward(*s.sp, d_o, grads.q, grads.k, grads.v);
  } else {
    kernels::attention_backward(s.qkv.q, s.qkv.k, s.qkv.v, s.o, s.lse, d_o, scale_,
                                /*causal=*/true, 0, 0, grads.q, grads.k, grads.v);
  }
  rope_.backward(grads.q, s.batch);
  rope_.backward(grads.k, s.batch);
  return proj_.backward_qkv(s.x, grads);
}

std::unique_ptr<MixerCache> SoftmaxAttention::new_cache(int64_t batch, int64_t max_len) const {
  return std::make_unique<KvCache>(batch, max_len, proj_.kv_heads(), proj_.head_dim());
}

}  // namespace weft::models

namespace weft::models {

std::unique_ptr<MixerCache> SoftmaxAttention::new_paged_cache(int64_t num_blocks,
                                                              int64_t block_size) const {
  return std::make_unique<PagedCache>(num_blocks, block_size, proj_.kv_heads(), proj_.head_dim());
}

int64_t SoftmaxAttention::paged_cache_block_bytes(int64_t block_size) const {
  return 2 * block_size * proj_.kv_heads() * proj_.head_dim() * static_cast<int64_t>(sizeof(float));
}

}  // namespace weft::models
