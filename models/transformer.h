// The CausalLM of docs/architecture.md: embedding -> decoder blocks -> final norm -> LM head ->
// next-token cross-entropy, with explicit forward and backward, laid over a mesh
// (models/model_layout.h): every layer tensor-parallel over tp (optionally with Megatron sequence
// parallelism) and the layers cut into pipeline chunks, the embedding on the first virtual stage,
// the final norm, head and loss on the last.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "models/causal_lm.h"
#include "models/decoder_block.h"
#include "models/embedding.h"
#include "models/lm_head.h"
#include "models/model_layout.h"
#include "models/rmsnorm.h"
#include "parallel/tensor_parallel.h"

namespace weft::models {

class Transformer final : public CausalLM {
 public:
  // `config` must be valid (io::parse_model_config checked it) and `layout` planned for it.
  // Collective over the mesh's tp and pp groups (it splits helper communicators). Parameter
  // values are uninitialised: the factories load or initialise them.
  Transformer(io::ModelConfig config, ModelLayout layout);

  [[nodiscard]] const io::ModelConfig& config() const override { return config_; }
  [[nodiscard]] const std::vector<Param*>& parameters() override { return params_; }
  [[nodiscard]] absl::Status check_tokens(const Tensor& tokens) const override;
  [[nodiscard]] absl::Status check_batch(const Tensor& tokens) const override;
  [[nodiscard]] std::vector<int64_t> sp_positions(int64_t seq_len) const override;
  [[nodiscard]] Shape activation_shape(int64_t batch, int64_t seq_len) const override;

  ForwardResult forward(const Tensor& tokens, const ForwardOptions& options) override;
  void backward(float loss_scale) override;
  void zero_grad() override;

  [[nodiscard]] int num_chunks() const override { return static_cast<int>(chunks_.size()); }
  [[nodiscard]] bool is_first_stage(int chunk) const override;
  [[nodiscard]] bool is_last_stage(int chunk) const override;
  [[nodiscard]] std::unique_ptr<ChunkState> new_chunk_state() override;
  Tensor forward_chunk(int chunk, const Tensor& tokens, const Tensor& input, ChunkState& state,
                       double* loss_sum) override;
  Tensor backward_chunk(int chunk, ChunkState& state, const Tensor& dout, float loss_scale,
                        bool last_microbatch) override;
  void finish_grads() override;
  void set_grad_ready_hook(std::function<void(Param&)> hook) override {
    grad_ready_ = std::move(hook);
  }
  [[nodiscard]] std::vector<std::pair<int64_t, MoeBlock*>> moe_layers() override;
  void set_logits_sink(std::function<void(Tensor)> sink) override {
    logits_sink_ = std::move(sink);
  }

  [[nodiscard]] std::unique_ptr<InferenceState> new_inference_state(int64_t batch,
                                                                    int64_t max_len) override;
  Tensor forward_incremental(InferenceState& state, const Tensor& tokens) override;
  [[nodiscard]] absl::StatusOr<int64_t> paged_cache_block_bytes(int64_t block_size) const override;
  [[nodiscard]] std::unique_ptr<PagedKvCache> new_paged_cache(int64_t num_blocks,
                                                              int64_t block_size) override;
  Tensor forward_paged(PagedKvCache& cache, const PagedBatch& batch) override;
  // TokenWeave's serving step (models/transformer_weave.cc): forward_paged under --token-weave.
  Tensor forward_paged_weave(PagedKvCache& cache, const PagedBatch& batch);
  [[nodiscard]] std::vector<std::pair<Tensor, Tensor>> paged_kv(PagedKvCache& cache) override;
  // models/transformer_shift.cc
  Tensor forward_paged_ulysses(PagedKvCache& cache, const PagedBatch& batch,
                               comm::Communicator& group) override;

 private:
  class DecodingState;
  class PagedState;
  struct ChunkSaved;
  struct Chunk {
    parallel::LayerRange range;
    std::vector<std::unique_ptr<DecoderBlock>> blocks;
    std::vector<Param*> params;  // the chunk's own, including the embedding / norm / head
  };

  // One chunk's forward of one micro-batch. keep: fill `s` for the backward. logits: where to
  // return the last stage's [N, V_r] logits (or null).
  Tensor chunk_forward(int chunk, const Tensor& tokens, const Tensor& input, ChunkSaved& s,
                       bool keep, Tensor* logits, double* loss_sum);
  // SeCO and SpaCO (models/transformer_seco.cc): the whole model chunk by chunk of positions, in
  // the single pipeline chunk. The forward keeps each layer's keys and values (its stream);
  // the backward reruns each chunk's forward and back-propagates it, last chunk first.
  void seco_forward(const Tensor& tokens, ChunkSaved& s, Tensor* logits, double* loss_sum);
  void seco_backward(ChunkSaved& s, float loss_scale);
  // The last stage's LM head and loss over normed [N, D] (every row of the micro-batch; this
  // rank's `positions` of each sequence): the loss sum, the logits when asked, `s` when keep.
  void head_forward(const Tensor& tokens, const std::vector<int64_t>& positions, Tensor normed,
                    ChunkSaved& s, bool keep, Tensor* logits, double* loss_sum);
  // The loss's gradient with respect to head_forward's normed [N, D], partial over tp; adds into
  // the head's weight gradient.
  [[nodiscard]] Tensor head_backward(ChunkSaved& s, float loss_scale);
  // TokenWeave in training (models/transformer_weave_train.cc): under --token-weave the whole
  // model's forward and backward run each micro-batch's sequences as two halves whose tp
  // collectives overlap the other half's compute, on Megatron-SP's layout.
  [[nodiscard]] bool weaves_training() const;
  void weave_forward(const Tensor& tokens, ChunkSaved& s, bool keep, Tensor* logits,
                     double* loss_sum);
  void weave_backward(ChunkSaved& s, float loss_scale);
  // Hands `chunk`'s gradients to the grad-ready hook (all but those finish_grads reduces).
  void grads_ready(const Chunk& chunk);
  // The groups finish_grads reduces over: norm weights (sequence parallelism), replicated KV
  // projections (tp > Hkv), the tied embedding's two copies (pp > 1).
  void plan_grad_reductions();
  [[nodiscard]] bool single_chunk() const;
  [[nodiscard]] bool reduced_by_finish_grads(const Param* p) const;

  // The sequence-parallel cores shared by the layers (none without --sp).
  void make_sp_cores();

  io::ModelConfig config_;
  ModelLayout layout_;
  parallel::TensorParallelRegion region_;
  std::unique_ptr<parallel::SequenceParallelAttention> sp_attention_;
  std::unique_ptr<parallel::SequenceParallelLinearAttention> sp_linear_;
  std::unique_ptr<comm::Communicator> kv_copies_group_;  // ranks sharing one KV head
  std::unique_ptr<comm::Communicator> tied_group_;       // first and last pp stage (tied)
  std::unique_ptr<Embedding> embedding_;                 // first stage only
  std::vector<Chunk> chunks_;
  std::unique_ptr<RmsNorm> final_norm_;  // last stage only
  std::unique_ptr<LmHead> head_;         // last stage only
  std::vector<Param*> params_;
  // Reduced by finish_grads. tp_partial_: replicated weights whose grads each tp rank computed
  // from its own rows (norms under sequence parallelism, routers of expert-parallel MoE).
  std::vector<Param*> tp_partial_, kv_copies_, tied_copies_;
  std::function<void(Param&)> grad_ready_;
  std::function<void(Tensor)> logits_sink_;
  std::unique_ptr<ChunkState> saved_;  // forward()/backward()'s micro-batch
  uint64_t spaco_draws_ = 0;           // SpaCO: backward passes drawn so far
};

}  // namespace weft::models
