#include "models/linear_attention.h"

#include <cmath>

#include "kernels/ops.h"

namespace weft::models {

struct LinearAttention::Saved : LayerSaved {
  TokenBatch batch;
  Tensor x;                                     // [N, D] the layer input
  QkvHeads qkv;                                 // q [B, T, H, d], k/v [B, T, Hkv, d]
  Tensor o;                                     // [B, T, H, d]
  std::unique_ptr<parallel::SpLinearSaved> sp;  // sequence-parallel core
};

class LinearAttention::State final : public MixerCache {
 public:
  explicit State(Shape shape) : s(Tensor::zeros(std::move(shape))) {}
  Tensor s;  // [B, H, d, d]
};

LinearAttention::LinearAttention(const io::ModelConfig& config, int64_t layer, const TpContext& tp,
                                 parallel::SequenceParallelLinearAttention* sp)
    : proj_(config, layer, tp),
      sp_(sp),
      gamma_(head_decays(proj_.first_head(), proj_.heads())),
      scale_(1.0f / std::sqrt(static_cast<float>(config.head_dim))) {}

std::vector<float> LinearAttention::head_decays(int64_t first, int64_t count) {
  std::vector<float> gamma(count);
  for (int64_t h = 0; h < count; ++h) {
    gamma[h] = static_cast<float>(1.0 - std::exp2(-5.0 - static_cast<double>(first + h)));
  }
  return gamma;
}

void LinearAttention::carry_state(int64_t len, const Tensor& m, Tensor& s) const {
  // S_out = gamma_h^len S_in + M, head by head.
  const int64_t rows = s.dim(0) * s.dim(1);  // B * H
  Tensor per_head = s.view({rows, s.numel() / rows});
  for (int64_t i = 0; i < rows; ++i) {
    Tensor row = per_head.slice(i, i + 1);
    kernels::scale_(row, std::pow(gamma_[i % gamma_.size()], static_cast<float>(len)));
  }
  kernels::add_(s, m);
}

Tensor LinearAttention::forward(const TokenBatch& batch, const Tensor& x, MixerCache* cache,
                                SavedPtr* saved) const {
  QkvHeads qkv = proj_.project_qkv(batch, x);
  const int64_t h = proj_.heads(), d = proj_.head_dim();
  std::unique_ptr<parallel::SpLinearSaved> sp_saved;
  Tensor o;  // [B, T, H, d]
  if (sp_ != nullptr && cache == nullptr) {
    o = sp_->forward(qkv.q, qkv.k, qkv.v, gamma_, scale_, saved != nullptr ? &sp_saved : nullptr);
  } else {
    o = Tensor::empty(qkv.q.shape());
    Tensor m = Tensor::empty({batch.batch, h, d, d});  // [B, H, d, d]
    Tensor s_in = cache != nullptr ? static_cast<State&>(*cache).s : Tensor();
    kernels::linear_attention_forward(qkv.q, qkv.k, qkv.v, gamma_, scale_, s_in, kChunk, o, m);
    if (cache != nullptr) carry_state(batch.len, m, s_in);
  }
  Tensor y = proj_.project_out(o);
  if (saved != nullptr) {
    WEFT_CHECK(cache == nullptr) << "backward through a carried state is not supported";
    auto s = std::make_unique<Saved>();
    s->batch = batch;
    s->x = x;
    s->qkv = std::move(qkv);
    s->o = std::move(o);
    s->sp = std::move(sp_saved);
    *saved = std::move(s);
  }
  return y;
}

Tensor LinearAttention::backward(LayerSaved& saved_base, const Tensor& dy) {
  auto& s = static_cast<Saved&>(saved_base);
  const Tensor d_o = proj_.backward_out(s.o, dy);  // [B, T, H, d]
  QkvHeads grads = proj_.zero_grads(s.batch);
  if (s.sp != nullptr) {
    sp_->backward(*s.sp, d_o, grads.q, grads.k, grads.v);
  } else {
    const int64_t d = proj_.head_dim();
    Tensor ds_in = Tensor::empty({s.batch.batch, proj_.heads(), d, d});  // unused: no carry
    kernels::linear_attention_backward(s.qkv.q, s.qkv.k, s.qkv.v, gamma_, scale_, Tensor(), d_o,
                                       Tensor(), kChunk, grads.q, grads.k, grads.v, ds_in);
  }
  return proj_.backward_qkv(s.x, grads);
}

std::unique_ptr<MixerCache> LinearAttention::new_cache(int64_t batch, int64_t max_len) const {
  const int64_t d = proj_.head_dim();
  return std::make_unique<State>(Shape{batch, proj_.heads(), d, d});
}

}  // namespace weft::models
