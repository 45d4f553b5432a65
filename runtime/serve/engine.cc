#include "runtime/serve/engine.h"

#include <algorithm>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "comm/activity.h"
#include "kernels/ops.h"
#include "nlohmann/json.hpp"
#include "runtime/core/check.h"
#include "runtime/serve/engine_internal.h"

namespace weft::serve {

namespace {

constexpr size_t kLatencySamples = 100000;  // TTFT/TPOT samples kept for /metrics

// The largest prefix of `text` that ends on a UTF-8 character boundary at or before `cut`.
size_t utf8_boundary(const std::string& text, size_t cut) {
  while (cut > 0 && cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) {
    --cut;
  }
  return cut;
}

// Where the request's text must end: the earliest occurrence of any stop string that is not
// wholly inside the text already sent (never before `emitted`); npos when none occurs.
size_t first_stop(const std::string& text, size_t emitted, const std::vector<std::string>& stops) {
  size_t end = std::string::npos;
  for (const std::string& stop : stops) {
    const size_t from = emitted >= stop.size() ? emitted - stop.size() + 1 : 0;
    const size_t at = text.find(stop, from);
    if (at != std::string::npos) end = std::min(end, std::max(at, emitted));
  }
  return end;
}

void append_json_ids(const nlohmann::json& value, std::vector<int64_t>& out) {
  if (value.is_number_integer()) {
    out.push_back(value.get<int64_t>());
  } else if (value.is_array()) {
    for (const auto& v : value) {
      if (v.is_number_integer()) out.push_back(v.get<int64_t>());
    }
  }
}

}  // namespace

std::vector<int64_t> read_eos_ids(const std::string& model_dir) {
  std::vector<int64_t> ids;
  for (const char* name : {"generation_config.json", "config.json"}) {
    std::ifstream in(model_dir + "/" + name);
    if (!in) continue;
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("eos_token_id")) append_json_ids(j["eos_token_id"], ids);
    if (!ids.empty()) break;
  }
  return ids;
}

Engine::Engine(models::CausalLM& model, comm::Communicator& world, const parallel::Mesh* mesh,
               EngineConfig config, DetokenizerFactory detokenizer)
    : model_(model),
      world_(world),
      mesh_(mesh),
      config_(std::move(config)),
      detokenizer_(std::move(detokenizer)),
      seeds_(std::random_device{}()) {}

Engine::~Engine() {
  if (relay_.joinable()) relay_.detach();  // run() never ended it (an error on the way out)
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::create(models::CausalLM& model,
                                                       comm::Communicator& world,
                                                       const parallel::Mesh* mesh,
                                                       EngineConfig config,
                                                       DetokenizerFactory detokenizer) {
  const int tp = mesh != nullptr ? mesh->tp().size() : 1;
  const int pp = mesh != nullptr ? mesh->pp().size() : 1;
  if (world.size() != tp * pp) {
    return absl::InvalidArgumentError(
        absl::StrCat("serving runs one model over all ranks: the world size ", world.size(),
                     " must equal --tp ", tp, " x --pp ", pp));
  }
  if (config.block_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--block-size ", config.block_size, " must be >= 1"));
  }
  const int64_t positions = model.config().max_position_embeddings;
  if (config.max_model_len == 0) config.max_model_len = positions;
  if (config.max_model_len < 1 || config.max_model_len > positions) {
    return absl::InvalidArgumentError(absl::StrCat("--max-model-len ", config.max_model_len,
                                                   " must be in [1, max_position_embeddings ",
                                                   positions, "]"));
  }
  absl::StatusOr<int64_t> block_bytes = model.paged_cache_block_bytes(config.block_size);
  if (!block_bytes.ok()) return block_bytes.status();
  if (config.num_blocks == 0) {
    // Each rank's share of a block differs by pipeline stage: the pool is what every rank fits.
    Tensor fit = Tensor::empty({1}, DType::kF32, Device::cpu());
    fit.data<float>()[0] = -static_cast<float>(config.kv_cache_bytes / *block_bytes);
    world.all_reduce(fit, comm::ReduceOp::kMax);
    config.num_blocks = static_cast<int64_t>(-fit.data<float>()[0]);
  }
  const int64_t needed = (config.max_model_len + config.block_size - 1) / config.block_size;
  if (config.num_blocks < needed) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the KV cache holds ", config.num_blocks, " blocks of ", config.block_size, " tokens (",
        *block_bytes, " bytes per block on this rank), fewer than the ", needed,
        " one request of --max-model-len ", config.max_model_len,
        " needs: raise --kv-cache-memory or --num-kv-blocks, or lower --max-model-len"));
  }
  auto engine = std::unique_ptr<Engine>(
      new Engine(model, world, mesh, std::move(config), std::move(detokenizer)));
  Engine& e = *engine;
  e.cache_ = model.new_paged_cache(e.config_.num_blocks, e.config_.block_size);
  if (world.rank() == 0) {
    e.blocks_ = std::make_unique<KvBlockManager>(static_cast<int>(e.config_.num_blocks),
                                                 e.config_.block_size, e.config_.prefix_caching);
    e.scheduler_ = std::make_unique<Scheduler>(e.config_.scheduler, e.blocks_.get());
    e.stats_.kv_blocks_total = static_cast<int>(e.config_.num_blocks);
  }
  kernels::set_batch_invariant(true);
  return engine;
}

std::optional<Engine::Invalid> Engine::check(const std::vector<int64_t>& prompt,
                                             const GenerationParams& p) const {
  if (prompt.empty()) return Invalid{"prompt", "the prompt is empty"};
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= vocab_size()) {
      return Invalid{"prompt", absl::StrCat("token id ", prompt[i], " at position ", i,
                                            " is outside the vocabulary [0, ", vocab_size(), ")")};
    }
  }
  if (p.max_tokens < 1) {
    return Invalid{"max_tokens", absl::StrCat("max_tokens ", p.max_tokens, " must be >= 1")};
  }
  const int64_t total = static_cast<int64_t>(prompt.size()) + p.max_tokens;
  if (total > config_.max_model_len) {
    return Invalid{"max_tokens",
                   absl::StrCat("this model's maximum context length is ", config_.max_model_len,
                                " tokens; the request needs ", total, " (", prompt.size(),
                                " in the prompt, ", p.max_tokens, " for the completion)")};
  }
  if (!(p.temperature >= 0) || p.temperature > 100) {
    return Invalid{"temperature",
                   absl::StrCat("temperature ", p.temperature, " must be in [0, 100]")};
  }
  if (!(p.top_p > 0 && p.top_p <= 1)) {
    return Invalid{"top_p", absl::StrCat("top_p ", p.top_p, " must be in (0, 1]")};
  }
  if (p.top_k < 0) return Invalid{"top_k", absl::StrCat("top_k ", p.top_k, " must be >= 0")};
  if (p.logprobs > 20) {
    return Invalid{"logprobs", absl::StrCat("logprobs ", p.logprobs, " must be at most 20")};
  }
  for (int64_t id : p.stop_token_ids) {
    if (id < 0 || id >= vocab_size()) {
      return Invalid{"stop_token_ids",
                     absl::StrCat("stop token id ", id, " is outside the vocabulary")};
    }
  }
  for (const std::string& s : p.stop) {
    if (s.empty()) return Invalid{"stop", "a stop string is empty"};
  }
  return std::nullopt;
}

absl::StatusOr<int64_t> Engine::submit(std::vector<int64_t> prompt, GenerationParams params,
                                       UpdateFn on_update) {
  if (disagg_ != nullptr && disagg_->is_front()) {
    return submit_front(std::move(prompt), std::move(params), std::move(on_update));
  }
  auto r = std::make_unique<Request>();
  r->prompt = std::move(prompt);
  r->params = std::move(params);
  r->on_update = std::move(on_update);
  r->submitted = Clock::now();
  for (const std::string& s : r->params.stop) r->hold_back = std::max(r->hold_back, s.size() - 1);
  std::lock_guard<std::mutex> lock(mu_);
  if (!failure_.empty()) return absl::UnavailableError(failure_);
  if (stopping_) return absl::FailedPreconditionError("the server is shutting down");
  if (unfinished_ >= config_.scheduler.max_num_seqs + config_.max_queue) {
    ++stats_.requests_rejected;
    return absl::ResourceExhaustedError(
        absl::StrCat("the queue is full (", config_.max_queue, " waiting beyond ",
                     config_.scheduler.max_num_seqs, " running); retry later"));
  }
  r->id = next_id_++;
  const int64_t id = r->id;
  ++unfinished_;
  inbox_.push_back(std::move(r));
  wake_.notify_one();
  return id;
}

void Engine::cancel(int64_t request) {
  if (disagg_ != nullptr && disagg_->is_front()) cancel_front(request);
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_.push_back(request);
  wake_.notify_one();
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Engine::take_inbox() {
  std::deque<std::unique_ptr<Request>> arrived;
  std::vector<int64_t> cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    arrived.swap(inbox_);
    cancelled.swap(cancelled_);
  }
  for (auto& r : arrived) {
    SamplingOptions so;
    so.greedy = r->params.temperature == 0;
    so.temperature = so.greedy ? 1.0f : r->params.temperature;
    so.top_p = r->params.top_p;
    so.top_k = r->params.top_k;
    so.seed = r->params.seed.has_value() ? *r->params.seed : seeds_();
    r->sampler = std::make_unique<Sampler>(so);
    if (detokenizer_) r->detok = detokenizer_();
    const absl::Status added = scheduler_->add(r->id, r->prompt, r->params.max_tokens);
    const int64_t id = r->id;
    requests_[id] = std::move(r);
    if (!added.ok()) {  // check() should have refused it; end it rather than fail the engine
      RequestUpdate update;
      finish(*requests_[id], "abort", update);
    }
  }
  for (int64_t id : cancelled) {
    auto it = requests_.find(id);
    if (it == requests_.end() || it->second->done) continue;
    scheduler_->finish(id);
    RequestUpdate update;
    finish(*it->second, "abort", update);
  }
  for (auto it = requests_.begin(); it != requests_.end();) {
    it = it->second->done ? requests_.erase(it) : std::next(it);
  }
}

models::PagedBatch Engine::build_batch(const StepPlan& plan) const {
  const int64_t n = plan.num_tokens, rows = static_cast<int64_t>(plan.chunks.size());
  const int64_t bs = config_.block_size;
  int64_t max_blocks = 1;
  for (const ScheduledChunk& c : plan.chunks) {
    max_blocks = std::max<int64_t>(max_blocks,
                                   static_cast<int64_t>(scheduler_->find(c.seq_id)->blocks.size()));
  }
  models::PagedBatch b;
  b.tokens = Tensor::empty({n}, DType::kI64, Device::cpu());
  b.positions = Tensor::empty({n}, DType::kI64, Device::cpu());
  b.seq = Tensor::empty({n}, DType::kI64, Device::cpu());
  b.slots = Tensor::empty({n}, DType::kI64, Device::cpu());
  b.block_tables = Tensor::zeros({rows, max_blocks}, DType::kI64, Device::cpu());
  int64_t* tok = b.tokens.data<int64_t>();
  int64_t* pos = b.positions.data<int64_t>();
  int64_t* seq = b.seq.data<int64_t>();
  int64_t* slot = b.slots.data<int64_t>();
  int64_t* table = b.block_tables.data<int64_t>();
  int64_t at = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const ScheduledChunk& c = plan.chunks[r];
    const Sequence& s = *scheduler_->find(c.seq_id);
    for (size_t i = 0; i < s.blocks.size(); ++i) table[r * max_blocks + i] = s.blocks[i];
    for (int64_t t = c.start; t < c.start + c.length; ++t, ++at) {
      tok[at] = s.tokens[t];
      pos[at] = t;
      seq[at] = r;
      slot[at] = s.blocks[t / bs] * bs + t % bs;
    }
    if (c.samples) b.sample_rows.push_back(at - 1);
  }
  WEFT_CHECK_EQ(at, n);
  return b;
}

bool Engine::sequence_parallel_step(int64_t tokens) const {
  return shift_model_ != nullptr && config_.shift_threshold >= 0 &&
         tokens > config_.shift_threshold && tokens >= shift_group_->size();
}

Tensor Engine::run_model(const models::PagedBatch& host_batch) {
  // The step's index tensors go to the model's device once; the logits come back to the host,
  // where sampling runs.
  const models::PagedBatch batch = host_batch.on(default_device());
  if (sequence_parallel_step(batch.size())) {
    return shift_model_->forward_paged_ulysses(*cache_, batch, *shift_group_).host();
  }
  Tensor logits = model_.forward_paged(*cache_, batch).host();
  const int pp = mesh_ != nullptr ? mesh_->pp().size() : 1;
  if (pp == 1) return logits;
  // The last stage's first tp rank hands the logits to rank 0 (pp rank 0 of the same pp group).
  comm::Communicator& pp_group = mesh_->pp();
  if (mesh_->tp().rank() != 0) return {};
  const int64_t s = static_cast<int64_t>(batch.sample_rows.size());
  if (pp_group.rank() == pp - 1 && s > 0) pp_group.send(logits, 0);
  if (pp_group.rank() == 0) {
    Tensor received = Tensor::empty({s, model_.config().vocab_size}, DType::kF32, Device::cpu());
    if (s > 0) pp_group.recv(received, pp - 1);
    return received;
  }
  return {};
}

void Engine::finish(Request& r, const std::string& reason, RequestUpdate& update) {
  if (r.done) return;
  r.done = true;
  const bool cut = reason == "abort" || reason == "error";
  if (r.detok && !cut) {
    r.text += r.detok->finish();
  }
  // Whatever is left, up to a stop string.
  size_t end = r.text.size();
  if (!cut) {
    end = std::min(end, first_stop(r.text, r.emitted, r.params.stop));
    update.text += r.text.substr(r.emitted, end - r.emitted);
  }
  r.emitted = end;
  update.request = r.id;
  update.finished = true;
  update.finish_reason = reason;
  update.prompt_tokens = static_cast<int64_t>(r.prompt.size());
  update.completion_tokens = r.generated;
  update.cached_prompt_tokens = std::max<int64_t>(r.cached_prompt, 0);
  record_finish(r, cut);
  if (r.on_update) r.on_update(update);
}

void Engine::record_finish(const Request& r, bool aborted) {
  std::lock_guard<std::mutex> lock(mu_);
  --unfinished_;
  ++stats_.requests_finished;
  if (aborted) ++stats_.requests_aborted;
  if (r.first_token) {
    const double ttft = std::chrono::duration<double>(*r.first_token - r.submitted).count();
    if (stats_.ttft_seconds.size() < kLatencySamples) stats_.ttft_seconds.push_back(ttft);
    if (r.generated > 1) {
      const double total = std::chrono::duration<double>(Clock::now() - r.submitted).count();
      if (stats_.tpot_seconds.size() < kLatencySamples) {
        stats_.tpot_seconds.push_back((total - ttft) / static_cast<double>(r.generated - 1));
      }
    }
  }
}

// A sampled token: stop conditions, text (held back while it may start a stop string).
// Returns through `update`; finishes the request when a stop condition holds.
void Engine::deliver(Request& r, const GeneratedToken& token, RequestUpdate& update) {
  update.request = r.id;
  ++r.generated;
  if (!r.first_token) r.first_token = Clock::now();
  update.tokens.push_back(token);
  const GenerationParams& p = r.params;
  const bool eos = !p.ignore_eos && std::find(config_.eos_ids.begin(), config_.eos_ids.end(),
                                              token.id) != config_.eos_ids.end();
  const bool stop_id = std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token.id) !=
                       p.stop_token_ids.end();
  if (eos || stop_id) {
    scheduler_->finish(r.id);
    finish(r, "stop", update);
    return;
  }
  if (r.detok) r.text += r.detok->push(token.id);
  if (const size_t stop = first_stop(r.text, r.emitted, p.stop); stop != std::string::npos) {
    // Cut at the earliest stop string; what follows is dropped.
    r.text.resize(stop);
    scheduler_->finish(r.id);
    r.detok.reset();  // nothing after the stop string is wanted
    finish(r, "stop", update);
    return;
  }
  const size_t ready = r.text.size() > r.hold_back ? r.text.size() - r.hold_back : 0;
  const size_t cut = utf8_boundary(r.text, ready);
  if (cut > r.emitted) {
    update.text += r.text.substr(r.emitted, cut - r.emitted);
    r.emitted = cut;
  }
}

bool Engine::step() {
  take_inbox();
  const StepPlan plan = scheduler_->schedule();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.running = scheduler_->num_running();
    stats_.waiting = scheduler_->num_waiting() + static_cast<int>(inbox_.size());
    stats_.kv_blocks_used = blocks_->num_used();
    stats_.prefix_hit_rate = blocks_->prefix_hit_rate();
    stats_.preemptions += static_cast<int64_t>(plan.preempted.size());
  }
  if (plan.empty()) return false;
  for (const ScheduledChunk& c : plan.chunks) {
    Request& r = *requests_.at(c.seq_id);
    if (r.cached_prompt < 0) r.cached_prompt = c.start;
  }
  const models::PagedBatch batch = build_batch(plan);
  // Tell the other ranks, then run our share.
  if (world_.size() > 1) {
    const int64_t n = batch.size(), rows = batch.block_tables.dim(0);
    const int64_t width = batch.block_tables.dim(1);
    const int64_t s = static_cast<int64_t>(batch.sample_rows.size());
    Tensor header = Tensor::empty({kHeaderSize}, DType::kI64, Device::cpu());
    int64_t* h = header.data<int64_t>();
    h[0] = kStep, h[1] = n, h[2] = rows, h[3] = width, h[4] = s;
    world_.broadcast(header, 0);
    Tensor payload = Tensor::empty({4 * n + rows * width + s}, DType::kI64, Device::cpu());
    int64_t at = 0;
    for (const Tensor* t :
         {&batch.tokens, &batch.positions, &batch.seq, &batch.slots, &batch.block_tables}) {
      payload.slice(at, at + t->numel()).copy_from(t->view({t->numel()}));
      at += t->numel();
    }
    std::copy(batch.sample_rows.begin(), batch.sample_rows.end(), payload.data<int64_t>() + at);
    world_.broadcast(payload, 0);
  }
  const Tensor logits = run_model(batch);
  if (disagg_ != nullptr && disagg_->is_prefill()) export_prefills(plan);
  const int64_t vocab = vocab_size();
  std::map<int64_t, int64_t> sampled;
  std::vector<std::pair<int64_t, GeneratedToken>> tokens;
  int64_t row = 0;
  int64_t prompt_computed = 0;
  for (const ScheduledChunk& c : plan.chunks) {
    Request& r = *requests_.at(c.seq_id);
    const int64_t prompt_end = static_cast<int64_t>(r.prompt.size());
    prompt_computed += std::max<int64_t>(0, std::min(c.start + c.length, prompt_end) - c.start);
    if (!c.samples) continue;
    const float* l = logits.data<float>() + row * vocab;
    ++row;
    GeneratedToken token;
    token.id = r.sampler->next(l, vocab);
    if (r.params.logprobs >= 0) {
      TokenLogprobs lp = token_logprobs(l, vocab, token.id, r.params.logprobs);
      token.logprob = lp.logprob;
      token.top = std::move(lp.top);
    }
    sampled[c.seq_id] = token.id;
    tokens.emplace_back(c.seq_id, std::move(token));
  }
  const std::vector<int64_t> by_length = scheduler_->complete(plan, sampled);
  for (auto& [id, token] : tokens) {
    Request& r = *requests_.at(id);
    RequestUpdate update;
    deliver(r, token, update);
    if (!r.done && std::find(by_length.begin(), by_length.end(), id) != by_length.end()) {
      finish(r, "length", update);
    } else if (!r.done && r.on_update) {
      r.on_update(update);
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.steps;
  if (sequence_parallel_step(batch.size())) ++stats_.sequence_parallel_steps;
  stats_.prompt_tokens += prompt_computed;
  stats_.generated_tokens += static_cast<int64_t>(tokens.size());
  return true;
}

void Engine::shutdown_workers() {
  if (world_.size() == 1) return;
  Tensor header = Tensor::zeros({kHeaderSize}, DType::kI64, Device::cpu());  // kShutdown
  world_.broadcast(header, 0);
}

void Engine::run(const std::atomic<bool>& stop) {
  while (!stop.load()) {
    if (step()) continue;
    std::unique_lock<std::mutex> lock(mu_);
    wake_.wait_for(lock, std::chrono::milliseconds(20),
                   [&] { return !inbox_.empty() || !cancelled_.empty(); });
  }
}

void Engine::shutdown() {
  end_all();
  shutdown_workers();
  if (disagg_ != nullptr) stop_disaggregation();
}

void Engine::fail_all(const std::string& message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    failure_ = message;
  }
  end_all(message);
  if (disagg_ != nullptr && disagg_->is_front()) end_front(message);
}

void Engine::end_all(const std::string& error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  take_inbox();
  for (auto& [id, r] : requests_) {
    if (r->done) continue;
    scheduler_->finish(id);
    RequestUpdate update;
    update.error = error;
    finish(*r, error.empty() ? "abort" : "error", update);
  }
  requests_.clear();
}

void Engine::run_until_done() {
  while (true) {
    if (step()) continue;
    std::lock_guard<std::mutex> lock(mu_);
    if (unfinished_ == 0) break;
  }
  shutdown_workers();
}

void Engine::run_worker() {
  while (true) {
    Tensor header = Tensor::empty({kHeaderSize}, DType::kI64, Device::cpu());
    // Idle servers send nothing: poll, then sleep, so a waiting rank does not hold a core.
    comm::WorkPtr work;
    {
      const comm::IdleWaitScope idle;  // no timeout on waiting for the next step
      work = world_.broadcast_async(header, 0);
    }
    const Clock::time_point since = Clock::now();
    while (!work->done()) {
      if (Clock::now() - since > std::chrono::milliseconds(2)) {
        std::this_thread::sleep_for(std::chrono::microseconds(500));
      }
    }
    work->wait();
    const int64_t* h = header.data<int64_t>();
    if (h[0] == kShutdown) {
      if (disagg_ != nullptr) disagg_->finish_sends();
      return;
    }
    if (h[0] == kExport || h[0] == kImport) {  // disaggregated serving
      Tensor payload = Tensor::empty({h[1]}, DType::kI64, Device::cpu());
      world_.broadcast(payload, 0);
      if (h[0] == kExport) {
        (void)run_export(payload);
      } else {
        run_import(payload);
      }
      continue;
    }
    const int64_t n = h[1], rows = h[2], width = h[3], s = h[4];
    Tensor payload = Tensor::empty({4 * n + rows * width + s}, DType::kI64, Device::cpu());
    world_.broadcast(payload, 0);
    models::PagedBatch batch;
    batch.tokens = payload.slice(0, n);
    batch.positions = payload.slice(n, 2 * n);
    batch.seq = payload.slice(2 * n, 3 * n);
    batch.slots = payload.slice(3 * n, 4 * n);
    batch.block_tables = payload.slice(4 * n, 4 * n + rows * width).view({rows, width});
    const int64_t* sr = payload.data<int64_t>() + 4 * n + rows * width;
    batch.sample_rows.assign(sr, sr + s);
    run_model(batch);
  }
}

}  // namespace weft::serve
