// Causal softmax self-attention with GQA and RoPE (HF rotate-half over the whole head dim):
//   q, k, v = x Wq, x Wk, x Wv (+ biases);  q, k = rope(q), rope(k);
//   o = softmax(q k^T / sqrt(d) + causal mask) v;  y = o Wo.
// Decoding keeps a KV cache per sequence; the new queries sit at positions offset.. and see
// every cached key.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "models/attention_projections.h"
#include "models/rotary_embedding.h"
#include "models/token_mixer.h"
#include "parallel/sp_attention.h"

namespace weft::models {

class SoftmaxAttention final : public TokenMixer {
 public:
  // sp: the sequence-parallel core that replaces attend() when the sequence is split (null:
  // this rank holds whole sequences). recompute_core (--recompute selective): a training
  // forward keeps q, k, v but not the core's output o and log-sum-exp, and the backward runs
  // the core again (whole sequences only: a sequence-parallel core keeps what it keeps).
  SoftmaxAttention(const io::ModelConfig& config, int64_t layer, const TpContext& tp,
                   parallel::SequenceParallelAttention* sp = nullptr, bool recompute_core = false);

  [[nodiscard]] Tensor forward(const TokenBatch& batch, const Tensor& x, MixerCache* cache,
                               SavedPtr* saved) const override;
  [[nodiscard]] Tensor backward(LayerSaved& saved, const Tensor& dy) override;
  // Chunk-wise runs (models/softmax_attention_stream.cc): the stream holds the keys and values
  // of the positions so far; a chunk's queries attend at the bottom right of the causal mask.
  [[nodiscard]] std::unique_ptr<MixerStream> stream_begin(const TokenBatch& batch,
                                                          int64_t chunk) const override;
  void stream_prefill(MixerStream& stream, const Tensor& x) const override;
  [[nodiscard]] Tensor stream_forward(MixerStream& stream, int64_t a, int64_t e, const Tensor& x,
                                      SavedPtr* saved) const override;
  [[nodiscard]] Tensor stream_backward(MixerStream& stream, LayerSaved& saved,
                                       const Tensor& dy) override;
  void stream_skip(MixerStream& stream, int64_t a, int64_t e) const override;
  [[nodiscard]] std::unique_ptr<MixerCache> new_cache(int64_t batch,
                                                      int64_t max_len) const override;
  [[nodiscard]] std::unique_ptr<MixerCache> new_paged_cache(int64_t num_blocks,
                                                            int64_t block_size) const override;
  [[nodiscard]] int64_t paged_cache_block_bytes(int64_t block_size) const override;
  void collect_params(std::vector<Param*>& out) override { proj_.collect_params(out); }

 private:
  struct Saved;
  struct Stream;
  struct ChunkSaved;
  class KvCache;
  class PagedCache;

  // The attention core over the whole batch (training / full forward): o [B,T,H,d], lse [B,H,T].
  void attend(const QkvHeads& qkv, Tensor& o, Tensor& lse) const;
  // The same with the keys and values of `cache` in front of the new ones, sequence by sequence.
  void attend_cached(const TokenBatch& batch, const QkvHeads& qkv, KvCache& cache, Tensor& o,
                     Tensor& lse) const;
  // A serving step: writes the step's K/V into the paged cache, then each token attends to its
  // own request's positions 0..pos through the block table (o [1, N, H, d]).
  void attend_paged(const PagedBatch& paged, const QkvHeads& qkv, PagedCache& cache,
                    Tensor& o) const;
  // The same in shift parallelism's sequence-parallel mode (models/softmax_attention_shift.cc):
  // qkv holds this rank's rows with every head; an all-to-all gives each rank every row of its
  // KV-cache shard's heads, which it attends for, and a second one returns the rows.
  // k_cache, v_cache: the layer's PagedCache.
  void attend_paged_ulysses(const PagedBatch& paged, const QkvHeads& qkv, Tensor& k_cache,
                            Tensor& v_cache, Tensor& o) const;

  AttentionProjections proj_;
  parallel::SequenceParallelAttention* sp_;
  RotaryEmbedding rope_;
  float scale_;  // 1 / sqrt(head_dim)
  bool recompute_core_;
};

}  // namespace weft::models
