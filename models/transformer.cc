#include "models/transformer.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/match.h"
#include "kernels/ops.h"
#include "models/moe_block.h"
#include "models/next_token_loss.h"
#include "models/param_init.h"
#include "models/transformer_saved.h"
#include "parallel/shard_gather.h"
#include "runtime/core/status.h"

namespace weft::models {

class Transformer::DecodingState final : public InferenceState {
 public:
  DecodingState(int64_t batch, int64_t max_len) : batch(batch), max_len(max_len) {}
  [[nodiscard]] int64_t length() const override { return consumed; }

  const int64_t batch;
  const int64_t max_len;
  int64_t consumed = 0;                             // tokens per sequence already in the caches
  std::vector<std::unique_ptr<MixerCache>> layers;  // one per decoder layer
};

namespace {

// Sums the gradients of `params` over `group` in one packed all-reduce.
void all_reduce_grads(comm::Communicator& group, const std::vector<Param*>& params) {
  int64_t total = 0;
  for (const Param* p : params) total += p->grad.numel();
  Tensor packed = Tensor::empty({total});  // [sum of sizes]
  int64_t at = 0;
  for (const Param* p : params) {
    packed.slice(at, at + p->grad.numel()).copy_from(p->grad.view({p->grad.numel()}));
    at += p->grad.numel();
  }
  group.all_reduce(packed);
  at = 0;
  for (Param* p : params) {
    p->grad.view({p->grad.numel()}).copy_from(packed.slice(at, at + p->grad.numel()));
    at += p->grad.numel();
  }
}

bool is_kv_projection(const Param& p) {
  return absl::StrContains(p.name, ".self_attn.k_proj.") ||
         absl::StrContains(p.name, ".self_attn.v_proj.");
}

}  // namespace

Transformer::Transformer(io::ModelConfig config, ModelLayout layout)
    : config_(std::move(config)),
      layout_(std::move(layout)),
      region_(layout_.tp.group, layout_.sequence_parallel) {
  const TpContext& tp = layout_.tp;
  make_sp_cores();
  const SpContext sp{sp_attention_.get(), sp_linear_.get()};
  const int chunks = static_cast<int>(layout_.chunks.size());  // chunks_ is not built yet
  const bool first = is_first_stage(0), last = is_last_stage(chunks - 1);
  if (first) {
    embedding_ = std::make_unique<Embedding>(config_.vocab_size, config_.hidden_size, tp.vocab());
  }
  chunks_.resize(chunks);
  for (int c = 0; c < chunks; ++c) {
    Chunk& chunk = chunks_[c];
    chunk.range = layout_.chunks[c];
    if (c == 0 && first) embedding_->collect_params(chunk.params);
    for (int layer = chunk.range.first; layer < chunk.range.last; ++layer) {
      chunk.blocks.push_back(std::make_unique<DecoderBlock>(
          config_, layer, tp, sp, layout_.experts, layout_.recompute == Recompute::kSelective));
      chunk.blocks.back()->collect_params(chunk.params);
    }
  }
  if (last) {
    final_norm_ = std::make_unique<RmsNorm>("model.norm", config_.hidden_size,
                                            static_cast<float>(config_.rms_norm_eps));
    LmHead::Weight weight = LmHead::Weight::kOwn;
    if (config_.tie_word_embeddings) {
      weight = first ? LmHead::Weight::kTied : LmHead::Weight::kTiedCopy;
    }
    head_ = std::make_unique<LmHead>(config_.vocab_size, config_.hidden_size, tp.vocab(), weight,
                                     first ? &embedding_->table() : nullptr);
    final_norm_->collect_params(chunks_.back().params);
    head_->collect_params(chunks_.back().params);
  }
  for (Chunk& chunk : chunks_) {
    params_.insert(params_.end(), chunk.params.begin(), chunk.params.end());
  }
  plan_grad_reductions();
}

void Transformer::make_sp_cores() {
  if (layout_.sp <= 1) return;
  const auto& types = config_.layer_types;
  const TpShard kv = layout_.tp.kv(config_.num_key_value_heads);
  if (std::count(types.begin(), types.end(), io::LayerType::kFullAttention) > 0) {
    auto core = parallel::make_sp_attention(
        *layout_.sp_group, {.algo = layout_.sp_attn,
                            .layout = layout_.sp_layout,
                            .ulysses = layout_.sp_ulysses,
                            .scale = 1.0f / std::sqrt(static_cast<float>(config_.head_dim)),
                            .heads = config_.num_attention_heads / layout_.tp.size,
                            .kv_heads = config_.num_key_value_heads / kv.parts});
    WEFT_CHECK(core.ok()) << core.status().message();  // plan_layout checked the options
    sp_attention_ = std::move(*core);
  }
  if (std::count(types.begin(), types.end(), io::LayerType::kLinearAttention) > 0) {
    auto core = parallel::make_sp_linear_attention(
        *layout_.sp_group, {.algo = layout_.sp_linear, .layout = layout_.sp_layout});
    WEFT_CHECK(core.ok()) << core.status().message();
    sp_linear_ = std::move(*core);
  }
}

std::vector<int64_t> Transformer::sp_positions(int64_t seq_len) const {
  if (layout_.sp <= 1) {
    std::vector<int64_t> all(seq_len);
    for (int64_t i = 0; i < seq_len; ++i) all[i] = i;
    return all;
  }
  return layout_.sp_layout.positions(seq_len, layout_.sp_rank);
}

Shape Transformer::activation_shape(int64_t batch, int64_t seq_len) const {
  const int64_t rows = region_.local_rows(batch * (seq_len / layout_.sp));
  return {batch, rows / batch, config_.hidden_size};
}

void Transformer::plan_grad_reductions() {
  const TpContext& tp = layout_.tp;
  for (Param* p : params_) {
    // Norms see only this rank's rows under sequence parallelism; an expert-parallel router
    // only the rows this tp rank routed.
    if ((region_.sequence_parallel() && absl::EndsWith(p->name, "norm.weight")) ||
        (tp.size > 1 && layout_.experts.dispatches() &&
         absl::EndsWith(p->name, "block_sparse_moe.gate.weight"))) {
      tp_partial_.push_back(p);
    }
  }
  const TpShard kv = tp.kv(config_.num_key_value_heads);
  if (kv.parts < tp.size) {
    // Each copy of a KV head saw only its own query heads: the copies' grads sum to the whole.
    kv_copies_group_ = tp.group->split_within(kv.index, tp.rank, "tp_kv_copies");
    for (Param* p : params_) {
      if (is_kv_projection(*p)) kv_copies_.push_back(p);
    }
  }
  if (config_.tie_word_embeddings && layout_.pp > 1) {
    const bool holds = layout_.pp_rank == 0 || layout_.pp_rank == layout_.pp - 1;
    tied_group_ =
        layout_.mesh->pp().split_within(holds ? 0 : 1, layout_.pp_rank, "pp_tied_embedding");
    if (embedding_ != nullptr) tied_copies_.push_back(&embedding_->table());
    if (head_ != nullptr) tied_copies_.push_back(&head_->weight());
  }
}

bool Transformer::reduced_by_finish_grads(const Param* p) const {
  for (const auto* group : {&tp_partial_, &kv_copies_, &tied_copies_}) {
    if (std::find(group->begin(), group->end(), p) != group->end()) return true;
  }
  return false;
}

bool Transformer::is_first_stage(int chunk) const {
  return layout_.chunks[chunk].virtual_stage == 0;
}

bool Transformer::is_last_stage(int chunk) const {
  return layout_.chunks[chunk].virtual_stage == layout_.stages - 1;
}

bool Transformer::single_chunk() const {
  return num_chunks() == 1 && is_first_stage(0) && is_last_stage(0);
}

absl::Status Transformer::check_tokens(const Tensor& tokens) const {
  if (tokens.ndim() != 2 || (tokens.dtype() != DType::kI64 && tokens.dtype() != DType::kI32)) {
    return invalid_argument("tokens must be a [batch, length] tensor of i32 or i64 ids, got ",
                            tokens.str());
  }
  const std::vector<int64_t> ids = tokens.to_ints();
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= config_.vocab_size) {
      const int64_t len = tokens.dim(1);
      return invalid_argument("token id ", ids[i], " at [", static_cast<int64_t>(i) / len, ", ",
                              static_cast<int64_t>(i) % len, "] is outside the vocabulary [0, ",
                              config_.vocab_size, ")");
    }
  }
  return absl::OkStatus();
}

absl::Status Transformer::check_batch(const Tensor& tokens) const {
  WEFT_RETURN_IF_ERROR(check_tokens(tokens));
  int64_t local_len = tokens.dim(1);
  if (layout_.sp > 1) {
    const bool softmax = sp_attention_ != nullptr;
    WEFT_RETURN_IF_ERROR(parallel::check_sp_split(
        layout_.sp_layout, tokens.dim(1),
        softmax ? absl::StrCat("--sp-attn ", parallel::sp_attn_name(layout_.sp_attn))
                : absl::StrCat("--sp-linear ", parallel::sp_linear_name(layout_.sp_linear))));
    local_len /= layout_.sp;
  }
  if (region_.sequence_parallel() && local_len % region_.size() != 0) {
    return invalid_argument("sequence length ", local_len, layout_.sp > 1 ? " per --sp rank" : "",
                            " is not divisible by --tp ", region_.size(),
                            " (--sequence-parallel splits each sequence over tp)");
  }
  return absl::OkStatus();
}

namespace {

// Columns `positions` of x [B, T] -> [B, positions.size()].
Tensor take_columns(const Tensor& x, const std::vector<int64_t>& positions) {
  const int64_t b = x.dim(0), t = x.dim(1), c = static_cast<int64_t>(positions.size());
  const std::vector<int64_t> all = x.to_ints();
  std::vector<int64_t> out;
  out.reserve(b * c);
  for (int64_t i = 0; i < b; ++i) {
    for (const int64_t p : positions) out.push_back(all[i * t + p]);
  }
  return Tensor::from_ints(out, {b, c}).on(x.device());
}

}  // namespace

std::unique_ptr<ChunkState> Transformer::new_chunk_state() {
  return std::make_unique<ChunkSaved>();
}

Tensor Transformer::chunk_forward(int c, const Tensor& tokens, const Tensor& input, ChunkSaved& s,
                                  bool keep, Tensor* logits, double* loss_sum) {
  const absl::Status valid = check_batch(tokens);
  WEFT_CHECK(valid.ok()) << valid.message();
  if (keep && layout_.seco > 0) {
    WEFT_CHECK(single_chunk()) << "--seco runs in one pipeline chunk";
    seco_forward(tokens, s, logits, loss_sum);
    return Tensor();
  }
  if (weaves_training()) {
    weave_forward(tokens, s, keep, logits, loss_sum);
    return Tensor();
  }
  const Chunk& chunk = chunks_[c];
  const int64_t b = tokens.dim(0), d = config_.hidden_size;
  // Under --sp this rank computes c of the T positions (any order the layout gives).
  const std::vector<int64_t> positions = sp_positions(tokens.dim(1));
  const int64_t t = static_cast<int64_t>(positions.size());
  const Tensor local_tokens = layout_.sp > 1 ? take_columns(tokens, positions) : tokens;
  const int64_t rows = region_.local_rows(b * t);  // this rank's rows between layers
  s.batch = TokenBatch::make(b, t, 0);
  if (layout_.sp > 1) s.batch.positions = Tensor::from_ints(positions, {t}).on(default_device());
  s.batch.seq_len = tokens.dim(1);
  s.ids = local_tokens.view({b * t});
  s.blocks.resize(chunk.blocks.size());
  Tensor x;  // [rows, D]
  if (is_first_stage(c)) {
    x = region_.leave(embedding_->forward(s.ids));
  } else {
    WEFT_CHECK_EQ(input.numel(), rows * d) << "chunk " << c << " got input " << input.str();
    x = input.view({rows, d});
  }
  const bool streamed = keep && layout_.streambp > 0;
  const bool recompute = streamed || (keep && layout_.recompute == Recompute::kFull);
  if (recompute) s.block_inputs.resize(chunk.blocks.size());
  if (streamed) s.moe_balance.resize(chunk.blocks.size());
  for (size_t i = 0; i < chunk.blocks.size(); ++i) {
    if (recompute) s.block_inputs[i] = x;
    x = chunk.blocks[i]->forward(s.batch, x, region_, nullptr,
                                 keep && !recompute ? &s.blocks[i] : nullptr);
    if (streamed && chunk.blocks[i]->moe() != nullptr) {
      s.moe_balance[i] = chunk.blocks[i]->moe()->last_balance();
    }
  }
  if (!is_last_stage(c)) return x.view({b, rows / b, d});

  Tensor normed = region_.enter(final_norm_->forward(x, keep ? &s.final_norm : nullptr));  // [N, D]
  head_forward(tokens, positions, std::move(normed), s, keep, logits, loss_sum);
  return Tensor();
}

void Transformer::head_forward(const Tensor& tokens, const std::vector<int64_t>& positions,
                               Tensor normed, ChunkSaved& s, bool keep, Tensor* logits,
                               double* loss_sum) {
  const int64_t b = tokens.dim(0), t = static_cast<int64_t>(positions.size());
  Tensor targets = next_token_targets(tokens);  // [B*T]
  if (layout_.sp > 1)
    targets = take_columns(targets.view({b, tokens.dim(1)}), positions).view({b * t});
  Tensor lse = Tensor::empty({b * t});  // [N]
  const int64_t n = b * t, step = layout_.streambp > 0 ? layout_.streambp : n;
  if (step >= n) {
    Tensor chunk_logits = head_->forward(normed);  // [N, V_r]
    *loss_sum =
        cross_entropy_sum(chunk_logits, targets, head_->vocab_start(), layout_.tp.group, lse);
    if (logits != nullptr) *logits = chunk_logits.view({b, t, chunk_logits.dim(1)});
    if (keep) {
      s.logits = std::move(chunk_logits);
      s.logits_returned = logits != nullptr;
    }
  } else {
    // --streambp: the head and the loss over `step` rows at a time; the [N, V_r] logits exist
    // only when the caller asks for them (evaluation's output), never for the backward.
    *loss_sum = 0;
    Tensor all_logits;
    for (int64_t r = 0; r < n; r += step) {
      const int64_t e = std::min(n, r + step);
      const Tensor part = head_->forward(normed.slice(r, e));  // [e - r, V_r]
      Tensor part_lse = lse.slice(r, e);
      *loss_sum += cross_entropy_sum(part, targets.slice(r, e), head_->vocab_start(),
                                     layout_.tp.group, part_lse);
      if (logits != nullptr) {
        if (!all_logits.defined()) all_logits = Tensor::empty({n, part.dim(1)});
        Tensor rows_out = all_logits.slice(r, e);
        rows_out.copy_from(part);
      }
    }
    if (logits != nullptr) *logits = all_logits.view({b, t, all_logits.dim(1)});
  }
  if (keep) {
    s.targets = std::move(targets);
    s.normed = std::move(normed);
    s.lse = std::move(lse);
  }
}

Tensor Transformer::forward_chunk(int chunk, const Tensor& tokens, const Tensor& input,
                                  ChunkState& state, double* loss_sum) {
  Tensor logits;  // [b, T, V_r] on the last stage, when a sink wants it
  Tensor out = chunk_forward(chunk, tokens, input, static_cast<ChunkSaved&>(state), true,
                             logits_sink_ ? &logits : nullptr, loss_sum);
  if (logits.defined()) logits_sink_(logits);
  return out;
}

Tensor Transformer::head_backward(ChunkSaved& s, float loss_scale) {
  ensure_grad(head_->weight());  // the embedding table of an earlier chunk when tied
  Tensor dnormed;                // [N, D], partial over tp
  if (s.logits.defined()) {
    // The [N, V_r] gradient overwrites the logits in place unless the caller holds them.
    Tensor dlogits = s.logits_returned ? Tensor::empty(s.logits.shape()) : s.logits;
    cross_entropy_grad(s.logits, s.targets, head_->vocab_start(), s.lse, loss_scale, dlogits);
    s.logits = Tensor();
    dnormed = head_->backward(s.normed, dlogits);
  } else {
    // --streambp: each chunk's logits again, its loss gradient, its share of dW_head and of
    // dnormed; then freed.
    const int64_t n = s.normed.dim(0), step = layout_.streambp;
    dnormed = Tensor::empty(s.normed.shape());
    for (int64_t r = 0; r < n; r += step) {
      const int64_t e = std::min(n, r + step);
      const Tensor rows = s.normed.slice(r, e);
      Tensor part = head_->forward(rows);  // [e - r, V_r], overwritten by its gradient
      cross_entropy_grad(part, s.targets.slice(r, e), head_->vocab_start(), s.lse.slice(r, e),
                         loss_scale, part);
      Tensor d_rows = dnormed.slice(r, e);
      d_rows.copy_from(head_->backward(rows, part));
    }
  }
  s.normed = Tensor();
  return dnormed;
}

Tensor Transformer::backward_chunk(int c, ChunkState& state, const Tensor& dout, float loss_scale,
                                   bool last_microbatch) {
  auto& s = static_cast<ChunkSaved&>(state);
  Chunk& chunk = chunks_[c];
  for (Param* p : chunk.params) ensure_grad(*p);
  if (!s.streams.empty()) {
    seco_backward(s, loss_scale);
    if (last_microbatch) grads_ready(chunk);
    return Tensor();
  }
  if (!s.halves.empty()) {
    weave_backward(s, loss_scale);
    if (last_microbatch) grads_ready(chunk);
    return Tensor();
  }
  const int64_t b = s.batch.batch, d = config_.hidden_size;
  const int64_t rows = region_.local_rows(s.batch.tokens());
  Tensor dx;  // [rows, D]
  if (is_last_stage(c)) {
    const Tensor dnormed = head_backward(s, loss_scale);  // [N, D], partial over tp
    dx = final_norm_->backward(s.final_norm, region_.enter_backward(dnormed));
  } else {
    WEFT_CHECK_EQ(dout.numel(), rows * d) << "chunk " << c << " got dout " << dout.str();
    dx = dout.view({rows, d});
  }
  for (size_t i = chunk.blocks.size(); i-- > 0;) {
    if (!s.moe_balance.empty()) {
      // --streambp: the block's backward chunk by chunk of positions, each chunk's forward
      // recomputed from the kept input.
      DecoderBlock& block = *chunk.blocks[i];
      block.set_recomputing(true);
      dx = block.backward_streamed(s.batch, s.block_inputs[i], dx, region_, layout_.streambp,
                                   &s.moe_balance[i]);
      block.set_recomputing(false);
      s.block_inputs[i] = Tensor();
      continue;
    }
    if (!s.block_inputs.empty()) {
      // --recompute full: the block's forward again from its kept input, now keeping what its
      // backward needs (the same values: every kernel is deterministic).
      DecoderBlock& block = *chunk.blocks[i];
      block.set_recomputing(true);
      (void)block.forward(s.batch, s.block_inputs[i], region_, nullptr, &s.blocks[i]);
      block.set_recomputing(false);
      s.block_inputs[i] = Tensor();
    }
    dx = chunk.blocks[i]->backward(s.blocks[i], dx, region_);
    s.blocks[i] = DecoderBlock::Saved();
  }
  Tensor dinput;  // [b, rows/b, D], or none on the first stage
  if (is_first_stage(c)) {
    embedding_->backward(s.ids, region_.leave_backward(dx));
  } else {
    dinput = dx.view({b, rows / b, d});
  }
  // Only now is every grad of the chunk (the embedding's too) complete.
  if (last_microbatch) grads_ready(chunk);
  return dinput;
}

void Transformer::grads_ready(const Chunk& chunk) {
  if (!grad_ready_) return;
  for (Param* p : chunk.params) {
    if (!reduced_by_finish_grads(p)) grad_ready_(*p);
  }
}

std::vector<std::pair<int64_t, MoeBlock*>> Transformer::moe_layers() {
  std::vector<std::pair<int64_t, MoeBlock*>> out;
  for (Chunk& chunk : chunks_) {
    for (size_t i = 0; i < chunk.blocks.size(); ++i) {
      if (MoeBlock* moe = chunk.blocks[i]->moe()) {
        out.emplace_back(chunk.range.first + static_cast<int64_t>(i), moe);
      }
    }
  }
  return out;
}

void Transformer::finish_grads() {
  for (Param* p : params_) ensure_grad(*p);
  if (!tp_partial_.empty()) all_reduce_grads(*layout_.tp.group, tp_partial_);
  if (!kv_copies_.empty()) all_reduce_grads(*kv_copies_group_, kv_copies_);
  if (!tied_copies_.empty()) all_reduce_grads(*tied_group_, tied_copies_);
  if (!grad_ready_) return;
  for (const auto* group : {&tp_partial_, &kv_copies_, &tied_copies_}) {
    for (Param* p : *group) grad_ready_(*p);
  }
}

ForwardResult Transformer::forward(const Tensor& tokens, const ForwardOptions& options) {
  WEFT_CHECK(single_chunk()) << "forward() runs the whole model: use forward_chunk under --pp";
  saved_.reset();  // frees the activations of an earlier forward that had no backward
  auto state = std::make_unique<ChunkSaved>();
  ForwardResult result;
  chunk_forward(0, tokens, Tensor(), *state, options.for_backward,
                options.keep_logits ? &result.logits : nullptr, &result.loss_sum);
  result.predicted = tokens.dim(0) * (tokens.dim(1) - 1);
  if (options.for_backward) saved_ = std::move(state);
  return result;
}

void Transformer::backward(float loss_scale) {
  WEFT_CHECK(saved_ != nullptr) << "backward() needs a forward(for_backward = true) before it";
  backward_chunk(0, *saved_, Tensor(), loss_scale, /*last_microbatch=*/true);
  saved_.reset();
}

void Transformer::zero_grad() {
  for (Param* p : params_) {
    if (p->grad.defined()) {
      p->grad.zero_();
    } else {
      ensure_grad(*p);
    }
  }
}

std::unique_ptr<InferenceState> Transformer::new_inference_state(int64_t batch, int64_t max_len) {
  WEFT_CHECK(single_chunk()) << "incremental decoding runs the whole model on one pipeline stage";
  auto state = std::make_unique<DecodingState>(batch, max_len);
  for (auto& block : chunks_[0].blocks) state->layers.push_back(block->new_cache(batch, max_len));
  return state;
}

Tensor Transformer::forward_incremental(InferenceState& state_base, const Tensor& tokens) {
  auto& state = static_cast<DecodingState&>(state_base);
  const absl::Status valid = check_tokens(tokens);
  WEFT_CHECK(valid.ok()) << valid.message();
  const int64_t b = tokens.dim(0), t = tokens.dim(1);
  WEFT_CHECK_EQ(b, state.batch) << "tokens' batch differs from the inference state's";
  WEFT_CHECK_LE(state.consumed + t, state.max_len) << "decoding past the state's max_len";
  const TokenBatch batch = TokenBatch::make(b, t, state.consumed);
  // Decoding steps are a few rows: plain tensor parallelism, all rows on every rank.
  const parallel::TensorParallelRegion region = region_.without_sequence_parallel();
  Tensor x = region.leave(embedding_->forward(tokens.view({b * t})));  // [N, D]
  const std::vector<std::unique_ptr<DecoderBlock>>& blocks = chunks_[0].blocks;
  for (size_t i = 0; i < blocks.size(); ++i) {
    x = blocks[i]->forward(batch, x, region, state.layers[i].get(), nullptr);
  }
  state.consumed += t;
  const Tensor logits = head_->forward(final_norm_->forward(x, nullptr));  // [N, V_r]
  if (region.size() == 1) return logits.view({b, t, config_.vocab_size});
  return parallel::gather_shards(*layout_.tp.group, logits, 1, head_->vocab_start(),
                                 {b * t, config_.vocab_size})
      .view({b, t, config_.vocab_size});
}

absl::StatusOr<int64_t> Transformer::paged_cache_block_bytes(int64_t block_size) const {
  if (chunks_.size() != 1) {
    return absl::InvalidArgumentError("serving needs one pipeline chunk per rank (--pp-virtual 1)");
  }
  int64_t bytes = 0;
  for (const auto& block : chunks_[0].blocks) {
    const int64_t b = block->paged_cache_block_bytes(block_size);
    if (b == 0) {
      return absl::InvalidArgumentError(
          "serving needs softmax attention in every layer: this model has linear-attention "
          "layers (layer_types), which keep a per-request state instead of a KV cache");
    }
    bytes += b;
  }
  return bytes;
}

std::unique_ptr<PagedKvCache> Transformer::new_paged_cache(int64_t num_blocks, int64_t block_size) {
  auto state = std::make_unique<PagedState>();
  for (auto& block : chunks_[0].blocks) {
    state->layers.push_back(block->new_paged_cache(num_blocks, block_size));
    WEFT_CHECK(state->layers.back() != nullptr) << "paged_cache_block_bytes refuses this model";
  }
  return state;
}

Tensor Transformer::forward_paged(PagedKvCache& cache_base, const PagedBatch& paged) {
  if (layout_.token_weave && layout_.tp.size > 1) return forward_paged_weave(cache_base, paged);
  auto& cache = static_cast<PagedState&>(cache_base);
  const int64_t n = paged.size();
  WEFT_CHECK(n > 0) << "an empty serving step";
  TokenBatch batch{1, n, 0, paged.positions};
  batch.paged = &paged;
  batch.seq_lens = request_lengths(paged);
  // Steps are a few rows: plain tensor parallelism, all rows on every rank.
  const parallel::TensorParallelRegion region = region_.without_sequence_parallel();
  comm::Communicator* pp = layout_.pp > 1 ? &layout_.mesh->pp() : nullptr;
  Tensor x;  // [N, D]
  if (is_first_stage(0)) {
    x = region.leave(embedding_->forward(paged.tokens));
  } else {
    x = Tensor::empty({n, config_.hidden_size});
    pp->recv(x, layout_.pp_rank - 1);
  }
  const std::vector<std::unique_ptr<DecoderBlock>>& blocks = chunks_[0].blocks;
  for (size_t i = 0; i < blocks.size(); ++i) {
    x = blocks[i]->forward(batch, x, region, cache.layers[i].get(), nullptr);
  }
  if (!is_last_stage(0)) {
    pp->send(x, layout_.pp_rank + 1);
    return {};
  }
  const int64_t s = static_cast<int64_t>(paged.sample_rows.size());
  if (s == 0) return Tensor::empty({0, config_.vocab_size});
  Tensor rows = Tensor::empty({s, config_.hidden_size});  // only the rows that sample
  for (int64_t i = 0; i < s; ++i) {
    rows.slice(i, i + 1).copy_from(x.slice(paged.sample_rows[i], paged.sample_rows[i] + 1));
  }
  const Tensor logits = head_->forward(final_norm_->forward(rows, nullptr));  // [S, V_r]
  if (region.size() == 1) return logits;
  return parallel::gather_shards(*layout_.tp.group, logits, 1, head_->vocab_start(),
                                 {s, config_.vocab_size});
}

}  // namespace weft::models
