// Decayed linear attention (docs/architecture.md, "The model family"): the same q/k/v/o projections
// as softmax attention (GQA allowed), no RoPE, and per query head h (global index) with gamma_h = 1
// - 2^(-5-h) and s = 1/sqrt(d):
//   o_t = sum_{u<=t} gamma_h^(t-u) * s * (q_t . k_u) * v_u
// Decoding carries the state S [B, H, d, d]: a call over t new tokens reads S_in and leaves
// S_out = gamma^t S_in + M (M: the call's own decayed k^T v sum).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "models/attention_projections.h"
#include "models/token_mixer.h"
#include "parallel/sp_linear_attention.h"

namespace weft::models {

class LinearAttention final : public TokenMixer {
 public:
  // Under tp this rank's heads keep their global gamma_h (h from proj_.first_head()).
  // sp: the sequence-parallel core used when the sequence is split (null: whole sequences).
  LinearAttention(const io::ModelConfig& config, int64_t layer, const TpContext& tp,
                  parallel::SequenceParallelLinearAttention* sp = nullptr);

  [[nodiscard]] Tensor forward(const TokenBatch& batch, const Tensor& x, MixerCache* cache,
                               SavedPtr* saved) const override;
  [[nodiscard]] Tensor backward(LayerSaved& saved, const Tensor& dy) override;
  // Chunk-wise runs (models/linear_attention_stream.cc): the stream holds the state entering
  // each chunk; the chunks back-propagate from the last, handing the state's gradient down.
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
  void collect_params(std::vector<Param*>& out) override { proj_.collect_params(out); }

  // gamma_h for query heads [first, first + count) (global indices).
  [[nodiscard]] static std::vector<float> head_decays(int64_t first, int64_t count);

 private:
  struct Saved;
  struct Stream;
  struct ChunkSaved;
  class State;

  // Positions per chunk of the chunked kernel: quadratic work inside a chunk, a d x d state
  // carried between chunks.
  static constexpr int64_t kChunk = 64;

  // The carried decoding state after `len` tokens: s = gamma^len s + m (s, m [B, H, d, d]).
  void carry_state(int64_t len, const Tensor& m, Tensor& s) const;

  AttentionProjections proj_;
  parallel::SequenceParallelLinearAttention* sp_;
  std::vector<float> gamma_;  // [H local]
  float scale_;               // 1 / sqrt(head_dim)
};

}  // namespace weft::models
