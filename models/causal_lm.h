// CausalLM: the whole model family of docs/architecture.md (Llama/Qwen2 dense, Mixtral MoE, linear
// attention and hybrids via layer_types) with explicit forward and backward, llm.c style.
//
//   auto model = CausalLM::from_pretrained(dir);          // config.json + safetensors
//   auto out = model->forward(tokens, {.keep_logits = true, .for_backward = true});
//   model->backward(1.0f / out.predicted);                // grads of the mean loss
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "models/paged_batch.h"
#include "models/param.h"
#include "parallel/mesh.h"
#include "parallel/sp_attention.h"
#include "parallel/sp_linear_attention.h"
#include "runtime/core/tensor.h"
#include "runtime/io/model_config.h"

namespace weft::models {

class MoeBlock;

struct ForwardOptions {
  bool keep_logits = false;   // return the [B, T, V] logits
  bool for_backward = false;  // keep what backward() needs
};

struct ForwardResult {
  // [B, T, V] f32 when keep_logits, else undefined. Under tensor parallelism this rank's
  // vocabulary block [B, T, V_r], columns [offset, offset + V_r) with {offset, V_r} =
  // shard_extent(V, tp.vocab()) (models/sharding.h; blocks are shorter on the last ranks when
  // tp does not divide V); parallel::gather_shards over the tp group along dim 2 gives the
  // whole logits, exactly V columns. Under sequence parallelism (--sp) only this rank's
  // positions: [B, c, ...] in the order of sp_positions().
  Tensor logits;
  // Sum of next-token cross-entropy over predicted positions (under --sp, this rank's
  // positions: the sum over the sp group is the sequence's).
  double loss_sum = 0;
  int64_t predicted = 0;  // number of predicted positions: B * (T - 1)
};

// Per-request decoding state: the KV cache of softmax-attention layers and the carried state
// S of linear-attention layers, for `batch` sequences of up to `max_len` tokens.
class InferenceState {
 public:
  virtual ~InferenceState() = default;
  [[nodiscard]] virtual int64_t length() const = 0;  // tokens already consumed
};

// How a model is split over a Mesh (null mesh = one rank holds everything).
enum class Recompute { kNone, kSelective, kFull };
// "none" / "selective" / "full" -> the mode; an error naming the flag and the choices otherwise.
absl::StatusOr<Recompute> parse_recompute(const std::string& name);

struct ParallelOptions {
  const parallel::Mesh* mesh = nullptr;
  bool sequence_parallel = false;  // Megatron SP over the tp group
  int pp_virtual = 1;              // interleaved pipeline chunks per pp rank
  // Sequence parallelism over the mesh's sp group (--sp): the algorithms of softmax and of
  // linear-attention layers, and the Ulysses group size of usp.
  parallel::SpAttnAlgo sp_attn = parallel::SpAttnAlgo::kRing;
  parallel::SpLinearAlgo sp_linear = parallel::SpLinearAlgo::kZeco;
  int sp_ulysses = 1;
  // Activation recomputation (--recompute): kFull keeps each decoder layer's input only and runs
  // its forward again in the backward; kSelective reruns the softmax-attention core only.
  Recompute recompute = Recompute::kNone;
  // StreamBP (--streambp CHUNK): the LM head and cross-entropy over CHUNK rows at a time, so the
  // [N, vocab] logits are never kept for the backward, and each decoder layer's backward chunk
  // by chunk of CHUNK positions from its kept input (0: off). Whole sequences per rank only.
  int64_t streambp = 0;
  // SeCO (--seco CHUNK): forward and backward of the whole model chunk by chunk of CHUNK
  // positions, each layer's keys and values kept between them (0: off). SpaCO (--spaco-keep K):
  // the backward of about K of the chunks, drawn with spaco_seed (0: all).
  int64_t seco = 0;
  int64_t spaco_keep = 0;
  uint64_t spaco_seed = 0;
  // MoE (models/expert_context.h): per-sequence expert capacity (0 = dropless); the expert
  // placement over ep ranks per layer (empty: contiguous blocks) and speculative dispatch.
  double moe_capacity_factor = 0;
  std::vector<std::vector<int64_t>> expert_placement;
  bool speculative_moe = false;
  // TokenWeave (docs/serving.md "TokenWeave"): each tp step in two halves whose collectives
  // overlap the other half's compute, with reduce-scatter, the residual and the norms on this
  // rank's rows, and all-gather in place of all-reduce. Serving steps, and with
  // sequence_parallel (weft train sets both) training micro-batches, cut into two halves of
  // sequences (docs/algorithms.md "TokenWeave in training").
  bool token_weave = false;
};

// What one (micro-batch, pipeline chunk) keeps between forward_chunk and backward_chunk.
class ChunkState {
 public:
  virtual ~ChunkState() = default;
};

class CausalLM {
 public:
  virtual ~CausalLM() = default;

  // Loads config.json and the weights (single or sharded safetensors; bf16/f16/f32 converted
  // to f32). Errors name the problem: missing tensor, shape that disagrees with config.json.
  // Under a mesh each rank loads only its shard; errors name a degree that does not divide the
  // model ("--tp 3 does not divide num_attention_heads 8").
  static absl::StatusOr<std::unique_ptr<CausalLM>> from_pretrained(
      const std::string& model_dir, const ParallelOptions& parallel = {});
  // Random initialisation (normal, std 0.02; norm weights 1), reproducible from `seed`; the
  // same global weights whatever the mesh.
  static absl::StatusOr<std::unique_ptr<CausalLM>> from_config(
      const io::ModelConfig& config, uint64_t seed, const ParallelOptions& parallel = {});

  [[nodiscard]] virtual const io::ModelConfig& config() const = 0;
  // Every parameter once, in a fixed order (embedding, layers in order, final norm, head).
  [[nodiscard]] virtual const std::vector<Param*>& parameters() = 0;

  // Ids in [0, vocab_size): an error naming the first bad id and its position otherwise.
  [[nodiscard]] virtual absl::Status check_tokens(const Tensor& tokens) const = 0;
  // check_tokens, plus what the mesh needs of the batch's shape: under sequence parallelism the
  // length T divisible by tp ("sequence length 10 is not divisible by --tp 4 ..."). forward()
  // and forward_chunk() CHECK it: call this first on user input.
  [[nodiscard]] virtual absl::Status check_batch(const Tensor& tokens) const = 0;

  // The positions of a sequence of `seq_len` tokens this rank computes: 0..T-1, or under --sp
  // its share (parallel/sp_layout.h). Every forward takes whole sequences [B, T].
  [[nodiscard]] virtual std::vector<int64_t> sp_positions(int64_t seq_len) const = 0;
  // The activation a pipeline chunk hands to the next for a micro-batch [batch, seq_len].
  [[nodiscard]] virtual Shape activation_shape(int64_t batch, int64_t seq_len) const = 0;

  // tokens [B, T] (i64). Position t predicts tokens[:, t+1]; the last position predicts nothing.
  virtual ForwardResult forward(const Tensor& tokens, const ForwardOptions& options) = 0;
  // Back-propagates loss_sum * loss_scale from the last forward(for_backward = true) and ADDS
  // into every Param::grad. Under a mesh, finish_grads() completes the grads after the step's
  // last backward (a no-op on one rank).
  virtual void backward(float loss_scale) = 0;
  virtual void zero_grad() = 0;

  // ---- pipeline chunks (parallel/pipeline_layout.h) ---------------------------------------
  // This rank holds chunks 0..num_chunks()-1; chunk c is virtual stage c*pp + pp_rank. Without
  // a pipeline there is one chunk: the whole model. forward()/backward() above are one chunk,
  // one micro-batch.
  [[nodiscard]] virtual int num_chunks() const = 0;
  [[nodiscard]] virtual bool is_first_stage(int chunk) const = 0;  // holds the embedding
  [[nodiscard]] virtual bool is_last_stage(int chunk) const = 0;   // holds the head and loss
  [[nodiscard]] virtual std::unique_ptr<ChunkState> new_chunk_state() = 0;
  // tokens [b, T] of the micro-batch (every stage gets them; the last needs the targets).
  // input: the previous virtual stage's output (undefined on the first stage). Returns the
  // activation for the next virtual stage ([b, T, hidden], or [b, T/tp, hidden] under sequence
  // parallelism: tp rank r's block r of the b*T rows in (sequence, position) order), or on the
  // last stage an undefined tensor, with *loss_sum = the micro-batch's summed next-token loss
  // (the same on every tp rank).
  virtual Tensor forward_chunk(int chunk, const Tensor& tokens, const Tensor& input,
                               ChunkState& state, double* loss_sum) = 0;
  // dout: gradient of the chunk's output (undefined on the last stage, where backward starts
  // from loss_sum * loss_scale). Returns the gradient of its input (undefined on the first
  // stage). ADDS into parameter grads. `last_microbatch`: no later backward of this chunk in
  // this step, so its parameters' grads become final (see set_grad_ready_hook).
  virtual Tensor backward_chunk(int chunk, ChunkState& state, const Tensor& dout, float loss_scale,
                                bool last_microbatch) = 0;
  // Reductions the model owes after the step's last backward: norm grads over tp under sequence
  // parallelism, replicated KV-head grads, tied embedding grads between the first and last
  // pipeline stage. Collective over the model-parallel groups.
  virtual void finish_grads() = 0;
  // Called once per parameter per step when its grad is final on this rank (after the last
  // micro-batch's backward of its chunk, or after finish_grads for the parameters that
  // reduces): data-parallel reduction hooks in here to overlap with the rest of the backward.
  virtual void set_grad_ready_hook(std::function<void(Param&)> hook) = 0;
  // For eval: the last pipeline stage hands each micro-batch's logits [b, T, V_r] (this rank's
  // vocabulary block) to `sink` from forward_chunk, in micro-batch order. Null: none kept.
  virtual void set_logits_sink(std::function<void(Tensor)> sink) = 0;
  // The MoE blocks this rank holds, with their decoder layer index (none for a dense model):
  // their routing counters and routing sinks (`weft moe profile`).
  [[nodiscard]] virtual std::vector<std::pair<int64_t, MoeBlock*>> moe_layers() { return {}; }

  // Incremental decoding: consumes tokens [B, t] after the state's current length and returns
  // their logits [B, t, V]. Equals the matching rows of a full forward.
  [[nodiscard]] virtual std::unique_ptr<InferenceState> new_inference_state(int64_t batch,
                                                                            int64_t max_len) = 0;
  virtual Tensor forward_incremental(InferenceState& state, const Tensor& tokens) = 0;

  // ---- serving (docs/serving.md) -----------------------------------------------------------
  // Bytes of this rank's share of one KV block of `block_size` tokens over all its layers.
  // Errors: a layer that cannot serve from a paged cache (linear attention), pp_virtual > 1.
  [[nodiscard]] virtual absl::StatusOr<int64_t> paged_cache_block_bytes(
      int64_t block_size) const = 0;
  [[nodiscard]] virtual std::unique_ptr<PagedKvCache> new_paged_cache(int64_t num_blocks,
                                                                      int64_t block_size) = 0;
  // One serving step over every rank of the model (collective over tp and pp): returns the
  // next-token logits [S, V] (the whole vocabulary) of batch.sample_rows on the ranks of the
  // last pipeline stage, undefined elsewhere. Each token sees only its own request's cached
  // positions, and with kernels::set_batch_invariant(true) its logits do not depend on the
  // rest of the batch. Every rank passes the same batch (the first stage reads the tokens).
  virtual Tensor forward_paged(PagedKvCache& cache, const PagedBatch& batch) = 0;
  // The paged cache's k and v [num_blocks, block_size, Hkv_local, d] of each of this rank's
  // layers (shared storage): disaggregated serving moves a request's blocks with them.
  [[nodiscard]] virtual std::vector<std::pair<Tensor, Tensor>> paged_kv(PagedKvCache& cache) {
    (void)cache;
    return {};
  }
  // Shift parallelism's sequence-parallel mode (docs/serving.md "Shift parallelism"), on a
  // model that holds all the weights (one rank's layout), collective over `group`: each rank
  // runs its share of the step's rows, attention goes Ulysses-style into `cache`, the KV cache
  // of the tensor-parallel model over `group` (the same heads per rank). Returns the logits [S,
  // V] of batch.sample_rows on group rank 0, undefined elsewhere. Needs at least one row per
  // rank.
  virtual Tensor forward_paged_ulysses(PagedKvCache& cache, const PagedBatch& batch,
                                       comm::Communicator& group) {
    (void)cache;
    (void)batch;
    (void)group;
    WEFT_CHECK(false) << "this model has no sequence-parallel serving step";
    return {};
  }
};

}  // namespace weft::models
