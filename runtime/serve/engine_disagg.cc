// Disaggregated serving in the engine (docs/serving.md "Disaggregated prefill and decode").
//
// Rank 0 (the front): a request is routed to the prefill instance with the fewest prompt tokens
// queued and the decode instance with the fewest requests in flight. Its prompt's whole blocks
// before the last token (n tokens) are prefilled on the prefill instance as an internal request
// (rank 0's own engine for instance 0, else that instance's leader, which rank 0 sends it to);
// in the step that completes them every rank of the prefill instance sends its heads' keys and
// values of those n tokens to the decode instance, layer by layer, asynchronously (the next step
// runs meanwhile); then rank 0 forwards the request (told by a remote prefill leader's
// "prefilled" message). The decode leader writes the received keys and values into fresh
// blocks, names them for prefix reuse and queues the request as an ordinary one: its scheduler
// finds the prompt's first n tokens cached and computes the rest (at most a block) and every
// generated token, with the request's own sampler, detokenizer and stop conditions, exactly as a
// one-instance engine would. Its updates return to rank 0, which hands them to the client. A
// prompt of at most one block goes to the decode instance at once.
#include <algorithm>
#include <span>
#include <thread>

#include "absl/strings/str_cat.h"
#include "runtime/core/check.h"
#include "runtime/serve/engine_internal.h"

namespace weft::serve {

using nlohmann::json;

namespace {

json params_json(const GenerationParams& p) {
  json j = {{"max_tokens", p.max_tokens},
            {"temperature", p.temperature},
            {"top_p", p.top_p},
            {"top_k", p.top_k},
            {"stop", p.stop},
            {"stop_token_ids", p.stop_token_ids},
            {"ignore_eos", p.ignore_eos},
            {"logprobs", p.logprobs}};
  if (p.seed.has_value()) j["seed"] = *p.seed;
  return j;
}

GenerationParams params_of(const json& j) {
  GenerationParams p;
  p.max_tokens = j["max_tokens"];
  p.temperature = j["temperature"];
  p.top_p = j["top_p"];
  p.top_k = j["top_k"];
  p.stop = j["stop"].get<std::vector<std::string>>();
  p.stop_token_ids = j["stop_token_ids"].get<std::vector<int64_t>>();
  p.ignore_eos = j["ignore_eos"];
  p.logprobs = j["logprobs"];
  if (j.contains("seed")) p.seed = j["seed"].get<uint64_t>();
  return p;
}

json update_json(const RequestUpdate& u, int64_t front) {
  json tokens = json::array();
  for (const GeneratedToken& t : u.tokens) tokens.push_back({t.id, t.logprob, t.top});
  return {{"type", "update"},
          {"id", front},
          {"tokens", tokens},
          {"text", u.text},
          {"finished", u.finished},
          {"finish_reason", u.finish_reason},
          {"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"cached_prompt_tokens", u.cached_prompt_tokens}};
}

RequestUpdate update_of(const json& j) {
  RequestUpdate u;
  u.request = j["id"];
  for (const json& t : j["tokens"]) {
    GeneratedToken g;
    g.id = t[0];
    g.logprob = t[1];
    g.top = t[2].get<std::vector<std::pair<int64_t, float>>>();
    u.tokens.push_back(std::move(g));
  }
  u.text = j["text"];
  u.finished = j["finished"];
  u.finish_reason = j["finish_reason"];
  u.prompt_tokens = j["prompt_tokens"];
  u.completion_tokens = j["completion_tokens"];
  u.cached_prompt_tokens = j["cached_prompt_tokens"];
  return u;
}

// A request message for a decode instance that prefills the whole prompt itself.
json local_request(int64_t id, const std::vector<int64_t>& prompt, const GenerationParams& params) {
  return {{"type", "request"}, {"id", id},  {"prompt", prompt}, {"params", params_json(params)},
          {"from", -1},        {"tag", -1}, {"tokens", 0}};
}

// Ends a front request for its client: "abort" (`error` empty) or "error".
void end_request(int64_t id, const UpdateFn& on_update, const std::string& error) {
  RequestUpdate u;
  u.request = id;
  u.finished = true;
  u.finish_reason = error.empty() ? "abort" : "error";
  u.error = error;
  if (on_update) on_update(u);
}

// Broadcasts a kExport/kImport command and its payload to an instance's other ranks.
void broadcast_command(comm::Communicator& group, StepCommand command, const Tensor& payload) {
  if (group.size() == 1) return;
  Tensor header = Tensor::zeros({kHeaderSize}, DType::kI64, Device::cpu());
  header.data<int64_t>()[0] = command;
  header.data<int64_t>()[1] = payload.numel();
  group.broadcast(header, 0);
  Tensor copy = payload.clone();
  group.broadcast(copy, 0);
}

}  // namespace

void Engine::set_disaggregation(std::unique_ptr<Disaggregation> disagg) {
  disagg_ = std::move(disagg);
  if (!disagg_->is_front()) return;
  const DisaggLayout& l = disagg_->layout();
  load_.assign(l.instances(), 0);
  lost_.assign(l.instances(), false);
  prefills_open_ = l.prefill_instances() - 1;
  stats_.prefills.assign(l.prefill_instances(), 0);
  relay_ = std::thread([this] { relay_loop(); });
}

int Engine::least_loaded(int first, int end) const {
  int best = -1;
  for (int g = first; g < end; ++g) {
    if (!lost_[g] && (best < 0 || load_[g] < load_[best])) best = g;
  }
  WEFT_CHECK(best >= 0) << "every instance in [" << first << ", " << end << ") is lost";
  return best;
}

absl::StatusOr<int64_t> Engine::submit_front(std::vector<int64_t> prompt, GenerationParams params,
                                             UpdateFn on_update) {
  std::lock_guard<std::mutex> front_lock(front_mu_);
  int64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failure_.empty()) return absl::UnavailableError(failure_);
    if (stopping_) return absl::FailedPreconditionError("the server is shutting down");
    id = next_id_++;
  }
  const int prefills = disagg_->layout().prefill_instances();
  auto f = std::make_unique<FrontRequest>();
  f->decode = least_loaded(prefills, static_cast<int>(load_.size()));
  ++load_[f->decode];
  f->on_update = std::move(on_update);
  f->prompt = std::move(prompt);
  f->params = std::move(params);
  const int64_t bs = config_.block_size;
  const int64_t length = static_cast<int64_t>(f->prompt.size());
  // The prompt's whole blocks before its last token move; a short prompt is prefilled where it
  // decodes.
  const int64_t n = length <= config_.disagg_local_prefill ? 0 : (length - 1) / bs * bs;
  if (n == 0) {
    f->forwarded = true;
    disagg_->send_down(f->decode, local_request(id, f->prompt, f->params));
  } else {
    f->prefill = least_loaded(0, prefills);
    f->prefill_tokens = n;
    load_[f->prefill] += n;
    std::vector<int64_t> head(f->prompt.begin(), f->prompt.begin() + n);
    if (f->prefill == 0) {
      queue_prefill(id, id, std::move(head), f->decode);
    } else {
      disagg_->send_down(f->prefill,
                         {{"type", "request"}, {"id", id}, {"prompt", head}, {"to", f->decode}});
    }
  }
  front_[id] = std::move(f);
  return id;
}

void Engine::queue_prefill(int64_t id, int64_t front, std::vector<int64_t> prompt, int to) {
  auto r = std::make_unique<Request>();
  r->id = id;
  r->prompt = std::move(prompt);
  r->params.max_tokens = 1;  // the step that computes the last of the n samples once: dropped
  r->params.temperature = 0;
  r->params.ignore_eos = true;
  r->submitted = Clock::now();
  r->export_to = to;
  r->front = front;
  std::lock_guard<std::mutex> lock(mu_);
  ++unfinished_;
  inbox_.push_back(std::move(r));
  wake_.notify_one();
}

void Engine::export_prefills(const StepPlan& plan) {
  std::vector<int64_t> payload = {0};
  std::vector<std::tuple<int64_t, int, int64_t>> sent;  // front id, tag, tokens
  for (const ScheduledChunk& c : plan.chunks) {
    if (!c.samples) continue;
    const Request& r = *requests_.at(c.seq_id);
    if (r.export_to < 0) continue;
    const Sequence& s = *scheduler_->find(c.seq_id);
    const int64_t n = static_cast<int64_t>(r.prompt.size()), bs = config_.block_size;
    const int tag = 100 + next_tag_++ % 30000;
    payload.insert(payload.end(), {r.export_to, tag, n});
    for (int64_t t = 0; t < n; ++t) payload.push_back(s.blocks[t / bs] * bs + t % bs);
    ++payload[0];
    sent.emplace_back(r.front, tag, n);
  }
  if (sent.empty()) return;
  const Tensor t = Tensor::from_ints(payload, {static_cast<int64_t>(payload.size())});
  broadcast_command(world_, kExport, t);
  const std::vector<int64_t> bytes = run_export(t);
  const int from = disagg_->instance();
  for (size_t i = 0; i < sent.size(); ++i) {
    const auto& [front, tag, n] = sent[i];
    if (disagg_->is_front()) {
      forward_front(front, from, tag, n, bytes[i]);
    } else {
      send_message(
          disagg_->up(from), 0,
          {{"type", "prefilled"}, {"id", front}, {"tag", tag}, {"tokens", n}, {"bytes", bytes[i]}});
    }
  }
}

std::vector<int64_t> Engine::run_export(const Tensor& payload) {
  const std::vector<int64_t> p = payload.to_ints();
  const std::vector<std::pair<Tensor, Tensor>> layers = model_.paged_kv(*cache_);
  std::vector<int64_t> bytes;
  size_t at = 1;
  for (int64_t i = 0; i < p[0]; ++i) {
    const int to = static_cast<int>(p[at]), tag = static_cast<int>(p[at + 1]);
    const int64_t n = p[at + 2];
    const std::vector<int64_t> slots(p.begin() + at + 3, p.begin() + at + 3 + n);
    bytes.push_back(disagg_->send_kv(layers, slots, to, tag));
    at += 3 + n;
  }
  return bytes;
}

void Engine::forward_front(int64_t id, int from, int tag, int64_t tokens, int64_t bytes) {
  std::lock_guard<std::mutex> lock(front_mu_);
  auto it = front_.find(id);
  // Ended by fail_all or lose_decode_instance, or moved off a lost instance (its keys and
  // values went there): nothing to hand over.
  if (it == front_.end() || it->second->rerouted) return;
  FrontRequest& f = *it->second;
  {
    std::lock_guard<std::mutex> stats_lock(mu_);
    stats_.kv_transfer_bytes += bytes;
    ++stats_.disaggregated_requests;
    ++stats_.prefills.at(from);
  }
  load_[f.prefill] -= f.prefill_tokens;
  f.prefill_tokens = 0;
  // Forwarded even when cancelled: the instance must take the keys and values sent to it.
  f.forwarded = true;
  disagg_->send_down(f.decode, {{"type", "request"},
                                {"id", id},
                                {"prompt", f.prompt},
                                {"params", params_json(f.params)},
                                {"from", from},
                                {"tag", tag},
                                {"tokens", tokens}});
  if (f.cancelled) disagg_->send_down(f.decode, {{"type", "cancel"}, {"id", id}});
}

bool Engine::lose_decode_instance(int g, const std::string& error) {
  const DisaggLayout& l = disagg_->layout();
  std::vector<std::pair<int64_t, std::unique_ptr<FrontRequest>>> failed;
  std::vector<int64_t> prefilling_here;
  int64_t rerouted = 0;
  {
    std::lock_guard<std::mutex> lock(front_mu_);
    if (lost_.at(g)) return true;
    int alive = 0;
    for (int d = l.prefill_instances(); d < l.instances(); ++d) alive += d != g && !lost_[d];
    if (alive == 0) return false;
    lost_[g] = true;
    disagg_->forget(g);
    for (auto it = front_.begin(); it != front_.end();) {
      FrontRequest& f = *it->second;
      if (f.decode != g) {
        ++it;
        continue;
      }
      if (!f.forwarded) {  // still prefilling: its keys and values would go to a dead instance
        load_[f.prefill] -= f.prefill_tokens;
        f.prefill_tokens = 0;
        if (f.prefill == 0) {
          prefilling_here.push_back(it->first);  // rank 0's engine: the same id
        } else {
          disagg_->send_down(f.prefill, {{"type", "cancel"}, {"id", it->first}});
        }
      }
      if (!f.answered && !f.cancelled) {
        // Nothing of it has reached its client: it starts again on a live decode instance,
        // which prefills the whole prompt itself (what it had on the lost one is gone).
        f.decode = least_loaded(l.prefill_instances(), l.instances());
        ++load_[f.decode];
        f.forwarded = true;
        f.rerouted = true;
        disagg_->send_down(f.decode, local_request(it->first, f.prompt, f.params));
        ++rerouted;
        ++it;
        continue;
      }
      failed.emplace_back(it->first, std::move(it->second));
      it = front_.erase(it);
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.lost_instances;
    stats_.rerouted_requests += rerouted;
    // The prefills in rank 0's own engine: cancelled there only (cancel() would also cancel the
    // front request, which may have just been started again elsewhere).
    cancelled_.insert(cancelled_.end(), prefilling_here.begin(), prefilling_here.end());
    wake_.notify_one();
  }
  for (const auto& [id, f] : failed) end_request(id, f->on_update, error);
  return true;
}

void Engine::relay_loop() {
  const int instances = disagg_->layout().instances();
  std::vector<std::unique_ptr<MessageInbox>> inboxes(instances);
  for (int g = 1; g < instances; ++g) {
    inboxes[g] = std::make_unique<MessageInbox>(disagg_->up(g), 1);
  }
  int open = instances - 1;
  std::vector<bool> closed(instances, false);
  while (open > 0) {
    bool any = false;
    for (int g = 1; g < instances; ++g) {
      if (closed[g]) continue;
      if (disagg_->lost(g)) {  // its receive never ends: left posted, and the inbox kept
        closed[g] = true;
        --open;
        (void)inboxes[g].release();
        continue;
      }
      while (std::optional<json> m = inboxes[g]->poll()) {
        any = true;
        const std::string type = (*m)["type"];
        if (type == "bye") {
          closed[g] = true;
          --open;
          if (disagg_->layout().is_prefill(g)) {
            std::lock_guard<std::mutex> lock(front_mu_);
            --prefills_open_;
            prefills_closed_.notify_all();
          }
          break;
        }
        if (type == "prefilled") {
          forward_front((*m)["id"], g, (*m)["tag"], (*m)["tokens"], (*m)["bytes"]);
          continue;
        }
        RequestUpdate u = update_of(*m);
        UpdateFn callback;
        {
          std::lock_guard<std::mutex> lock(front_mu_);
          auto it = front_.find(u.request);
          // Gone, or moved off this instance since it was lost (a late update from it).
          if (it == front_.end() || it->second->decode != g) continue;
          callback = it->second->on_update;
          it->second->answered = true;
          if (u.finished) {
            --load_[it->second->decode];
            front_.erase(it);
          }
        }
        if (callback) callback(u);
      }
    }
    if (!any) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

void Engine::stop_disaggregation() {
  // The prefill instances first: what they exported before they stop reaches its decode
  // instance ahead of that instance's shutdown.
  const DisaggLayout& l = disagg_->layout();
  for (int g = 1; g < l.prefill_instances(); ++g) disagg_->send_down(g, {{"type", "shutdown"}});
  {
    std::unique_lock<std::mutex> lock(front_mu_);
    prefills_closed_.wait(lock, [&] { return prefills_open_ == 0; });
  }
  for (int g = l.prefill_instances(); g < l.instances(); ++g) {
    disagg_->send_down(g, {{"type", "shutdown"}});
  }
  relay_.join();
  disagg_->finish_sends();
  end_front("");  // what the instances never finished (they abort theirs before they leave)
}

void Engine::end_front(const std::string& error) {
  std::map<int64_t, std::unique_ptr<FrontRequest>> left;
  {
    std::lock_guard<std::mutex> lock(front_mu_);
    left.swap(front_);
  }
  for (const auto& [id, f] : left) end_request(id, f->on_update, error);
}

void Engine::cancel_front(int64_t id) {
  std::lock_guard<std::mutex> lock(front_mu_);
  auto it = front_.find(id);
  if (it == front_.end()) return;
  FrontRequest& f = *it->second;
  f.cancelled = true;
  if (f.forwarded) {
    disagg_->send_down(f.decode, {{"type", "cancel"}, {"id", id}});
    return;
  }
  // Still prefilling: rank 0's own engine cancels it (Engine::cancel), another instance's
  // leader when told.
  load_[f.prefill] -= f.prefill_tokens;
  f.prefill_tokens = 0;
  if (f.prefill != 0) disagg_->send_down(f.prefill, {{"type", "cancel"}, {"id", id}});
}

void Engine::run_leader() {
  const int g = disagg_->instance();
  MessageInbox inbox(disagg_->down(g), 0);
  std::map<int64_t, int64_t> local_of;  // front id -> this engine's id
  bool open = true;
  while (open) {
    while (std::optional<json> m = inbox.poll()) {
      const std::string type = (*m)["type"];
      if (type == "request" && disagg_->is_prefill()) {
        const int64_t front = (*m)["id"];
        int64_t id = 0;
        {
          std::lock_guard<std::mutex> lock(mu_);
          id = next_id_++;
        }
        queue_prefill(id, front, (*m)["prompt"].get<std::vector<int64_t>>(), (*m)["to"]);
        local_of[front] = id;
      } else if (type == "request") {
        import_request(*m, local_of);
      } else if (type == "cancel") {
        if (auto it = local_of.find((*m)["id"]); it != local_of.end()) cancel(it->second);
      } else {
        open = false;  // "shutdown"
        break;
      }
    }
    if (open && !step()) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  end_all();  // their updates still reach rank 0
  send_message(disagg_->up(g), 0, {{"type", "bye"}});
  shutdown_workers();
  disagg_->finish_sends();
}

void Engine::import_request(const json& message, std::map<int64_t, int64_t>& local_of) {
  const int64_t front = message["id"];
  const std::vector<int64_t> prompt = message["prompt"].get<std::vector<int64_t>>();
  const int64_t n = message["tokens"];
  const int tag = message["tag"];
  const int from = message["from"];
  if (n > 0) {
    // Fresh blocks for the n tokens (all or none: what cannot be placed is received and
    // dropped, and the scheduler computes those tokens again).
    const int64_t bs = config_.block_size;
    std::vector<int> blocks;
    for (int64_t i = 0; i < n / bs; ++i) {
      const std::optional<int> b = blocks_->allocate();
      if (!b) break;
      blocks.push_back(*b);
    }
    const bool placed = static_cast<int64_t>(blocks.size()) == n / bs;
    std::vector<int64_t> payload = {from, tag, n};
    for (int64_t t = 0; t < n; ++t) payload.push_back(placed ? blocks[t / bs] * bs + t % bs : -1);
    const Tensor p = Tensor::from_ints(payload, {static_cast<int64_t>(payload.size())});
    broadcast_command(world_, kImport, p);
    run_import(p);
    if (placed) {
      uint64_t parent = 0;
      for (size_t i = 0; i < blocks.size(); ++i) {
        parent = blocks_->name_full_block(blocks[i], parent,
                                          std::span<const int64_t>(prompt.data() + i * bs, bs));
      }
    }
    blocks_->release(blocks);
  }
  const int instance = disagg_->instance();
  Disaggregation* links = disagg_.get();
  absl::StatusOr<int64_t> id = submit(prompt, params_of(message["params"]),
                                      [links, instance, front](const RequestUpdate& u) {
                                        send_message(links->up(instance), 0, update_json(u, front));
                                      });
  if (!id.ok()) {
    RequestUpdate u;
    u.finished = true;
    u.finish_reason = "abort";
    send_message(disagg_->up(instance), 0, update_json(u, front));
    return;
  }
  local_of[front] = *id;
}

void Engine::run_import(const Tensor& payload) {
  const std::vector<int64_t> p = payload.to_ints();
  const std::vector<int64_t> slots(p.begin() + 3, p.end());
  disagg_->receive_kv(model_.paged_kv(*cache_), slots, static_cast<int>(p[0]),
                      static_cast<int>(p[1]));
}

}  // namespace weft::serve
