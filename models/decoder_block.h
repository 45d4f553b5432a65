// One pre-norm decoder layer:
//   h = x + mixer(input_layernorm(x));   out = h + ffn(post_attention_layernorm(h))
// The mixer is softmax or linear attention (config.layer_types), the ffn a SwiGLU MLP or an
// MoE block (config.num_local_experts > 0).
// Under tensor parallelism the mixer and the ffn each run inside a tp region (their inputs
// entered, their partial outputs left, parallel/tensor_parallel.h); the norms and residuals run
// outside on this rank's rows: all of them, or its sequence block under sequence parallelism.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "models/expert_context.h"
#include "models/feed_forward.h"
#include "models/rmsnorm.h"
#include "models/sp_context.h"
#include "models/token_mixer.h"
#include "models/tp_context.h"
#include "parallel/tensor_parallel.h"
#include "runtime/io/model_config.h"

namespace weft::models {

class MoeBlock;

class DecoderBlock {
 public:
  struct Saved {
    RmsNorm::Saved norm1, norm2;
    SavedPtr mixer, ffn;
  };

  // sp: the sequence-parallel mixer cores (training and full forwards; decoding runs whole);
  // experts: the MoE layout (plain when it does not dispatch); recompute_attention: softmax
  // attention reruns its core in the backward (--recompute selective).
  DecoderBlock(const io::ModelConfig& config, int64_t layer, const TpContext& tp,
               const SpContext& sp = {}, const ExpertContext& experts = {},
               bool recompute_attention = false);

  // The block's four stages for TokenWeave (parallel/token_weave.h), which runs the tp
  // collectives between them itself: the norms on this rank's rows, the mixer and the
  // feed-forward on all rows (their outputs partial sums over tp). saved: fill for the backward
  // (training, models/transformer_weave_train.cc).
  [[nodiscard]] Tensor norm1(const Tensor& x, Saved* saved = nullptr) const {
    return input_norm_.forward(x, saved != nullptr ? &saved->norm1 : nullptr);
  }
  [[nodiscard]] Tensor mixer_partial(const TokenBatch& batch, const Tensor& xn, MixerCache* cache,
                                     Saved* saved = nullptr) const {
    return mixer_->forward(batch, xn, cache, saved != nullptr ? &saved->mixer : nullptr);
  }
  [[nodiscard]] Tensor norm2(const Tensor& h, Saved* saved = nullptr) const {
    return post_attention_norm_.forward(h, saved != nullptr ? &saved->norm2 : nullptr);
  }
  [[nodiscard]] Tensor ffn_partial(const Tensor& hn, Saved* saved = nullptr) const {
    return ffn_->forward(hn, saved != nullptr ? &saved->ffn : nullptr);
  }
  // The stages' backwards, in the reverse order: the gradient of a stage's output -> that of its
  // input, adding into the parameter gradients. The feed-forward's and the mixer's take all rows
  // and return partial sums over tp; each frees what its stage saved.
  [[nodiscard]] Tensor ffn_partial_backward(Saved& saved, const Tensor& dy);
  [[nodiscard]] Tensor norm2_backward(Saved& saved, const Tensor& dhn);
  [[nodiscard]] Tensor mixer_partial_backward(Saved& saved, const Tensor& dmix);
  [[nodiscard]] Tensor norm1_backward(Saved& saved, const Tensor& dxn);

  // A chunk of positions [a, e) of every sequence, run through the layer's mixer stream
  // (TokenMixer::stream_forward): StreamBP and SeCO.
  struct StreamChunk {
    MixerStream* stream = nullptr;
    int64_t a = 0, e = 0;
  };

  // x [n, D] -> [n, D] with n = region.local_rows(N). cache: decoding state of this layer (or
  // null); saved: fill for backward. chunk: `batch` is the chunk's rows (B sequences of e - a
  // positions from a) and the mixer runs them through chunk->stream (no sequence parallelism).
  [[nodiscard]] Tensor forward(const TokenBatch& batch, const Tensor& x,
                               const parallel::TensorParallelRegion& region, MixerCache* cache,
                               Saved* saved, const StreamChunk* chunk = nullptr) const;
  // dy [n, D] -> dx [n, D]; adds into the parameter gradients. `region` as in the forward;
  // stream: the forward's chunk->stream.
  [[nodiscard]] Tensor backward(Saved& saved, const Tensor& dy,
                                const parallel::TensorParallelRegion& region,
                                MixerStream* stream = nullptr);
  // The layer's stream for chunks of `chunk` positions of `batch`.
  [[nodiscard]] std::unique_ptr<MixerStream> stream_begin(const TokenBatch& batch,
                                                          int64_t chunk) const {
    return mixer_->stream_begin(batch, chunk);
  }
  void stream_skip(MixerStream& stream, int64_t a, int64_t e) const {
    mixer_->stream_skip(stream, a, e);
  }

  // StreamBP's chunk-wise backward (docs/algorithms.md "StreamBP"), from the kept input x [N, D]
  // of `batch` (whole sequences; under Megatron-SP each tp rank runs all rows): the keys and values
  // of every position (or the linear-attention states) once, then for each chunk of `chunk`
  // positions, last to first, the chunk's forward again and its backward from dy's rows. The
  // activations of one chunk exist at a time, besides the layer's keys and values and their
  // gradients. dy [N, D] -> dx [N, D]; adds into the parameter gradients. moe_balance: the MoE
  // load-balancing gradient of the micro-batch's forward (MoeBlock::last_balance), or null.
  [[nodiscard]] Tensor backward_streamed(const TokenBatch& batch, const Tensor& x, const Tensor& dy,
                                         const parallel::TensorParallelRegion& region,
                                         int64_t chunk, const std::vector<float>* moe_balance);

  [[nodiscard]] std::unique_ptr<MixerCache> new_cache(int64_t batch, int64_t max_len) const {
    return mixer_->new_cache(batch, max_len);
  }
  [[nodiscard]] std::unique_ptr<MixerCache> new_paged_cache(int64_t num_blocks,
                                                            int64_t block_size) const {
    return mixer_->new_paged_cache(num_blocks, block_size);
  }
  [[nodiscard]] int64_t paged_cache_block_bytes(int64_t block_size) const {
    return mixer_->paged_cache_block_bytes(block_size);
  }
  void collect_params(std::vector<Param*>& out);
  // The MoE block, or null for a dense MLP.
  [[nodiscard]] MoeBlock* moe() const;
  // A forward that repeats one already counted (--recompute): MoE counters stay as they are.
  void set_recomputing(bool recomputing);

 private:
  // backward_streamed under Megatron sequence parallelism: the chunks over all rows.
  [[nodiscard]] Tensor backward_streamed_sp(const TokenBatch& batch, const Tensor& x,
                                            const Tensor& dy,
                                            const parallel::TensorParallelRegion& region,
                                            int64_t chunk, const std::vector<float>* moe_balance);

  RmsNorm input_norm_;
  std::unique_ptr<TokenMixer> mixer_;
  RmsNorm post_attention_norm_;
  std::unique_ptr<FeedForward> ffn_;
};

}  // namespace weft::models
