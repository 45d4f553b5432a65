#include "runtime/serve/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/core/check.h"
#include "runtime/core/status.h"

namespace weft::serve {

Scheduler::Scheduler(const SchedulerConfig& config, KvBlockManager* blocks)
    : config_(config), blocks_(blocks) {
  WEFT_CHECK(config.max_num_seqs >= 1 && config.max_num_batched_tokens >= 1)
      << config.max_num_seqs << " sequences, " << config.max_num_batched_tokens << " tokens";
}

absl::Status Scheduler::add(int64_t id, std::vector<int64_t> prompt, int64_t max_new_tokens) {
  if (prompt.empty()) return invalid_argument("request ", id, ": the prompt is empty");
  if (max_new_tokens < 1) {
    return invalid_argument("request ", id, ": max_new_tokens ", max_new_tokens, " must be >= 1");
  }
  if (sequences_.count(id)) return invalid_argument("request ", id, " is already queued");
  // The K/V of every token but the last sampled one must fit at once.
  const int64_t need = static_cast<int64_t>(prompt.size()) + max_new_tokens - 1;
  const int64_t pool = int64_t{blocks_->num_blocks()} * blocks_->block_size();
  if (need > pool) {
    return invalid_argument("request ", id, ": ", prompt.size(), " prompt tokens + ",
                            max_new_tokens, " new tokens need ", need,
                            " KV slots, more than the cache's ", pool);
  }
  auto s = std::make_unique<Sequence>();
  s->id = id;
  s->prompt_len = static_cast<int64_t>(prompt.size());
  s->tokens = std::move(prompt);
  s->max_new_tokens = max_new_tokens;
  s->arrival = arrivals_++;
  sequences_.emplace(id, std::move(s));
  waiting_.push_back(id);
  return absl::OkStatus();
}

const Sequence* Scheduler::find(int64_t id) const {
  auto it = sequences_.find(id);
  return it == sequences_.end() ? nullptr : it->second.get();
}

bool Scheduler::grow(Sequence& s, int64_t tokens) {
  const int64_t bs = blocks_->block_size();
  const int64_t need = (tokens + bs - 1) / bs - static_cast<int64_t>(s.blocks.size());
  if (need > blocks_->num_free()) return false;
  for (int64_t i = 0; i < need; ++i) s.blocks.push_back(*blocks_->allocate());
  return true;
}

int64_t Scheduler::fits(const Sequence& s, int64_t want) const {
  const int64_t capacity =
      (static_cast<int64_t>(s.blocks.size()) + blocks_->num_free()) * blocks_->block_size();
  return std::max<int64_t>(0, std::min(want, capacity - s.num_computed));
}

void Scheduler::add_chunk(Sequence& s, int64_t length, StepPlan& plan) {
  WEFT_CHECK(grow(s, s.num_computed + length)) << "request " << s.id << ": blocks were counted";
  plan.chunks.push_back(
      {.seq_id = s.id,
       .start = s.num_computed,
       .length = length,
       .samples = s.num_computed + length == static_cast<int64_t>(s.tokens.size())});
  plan.num_tokens += length;
}

void Scheduler::release_cache(Sequence& s) {
  blocks_->release(s.blocks);
  s.blocks.clear();
  s.num_computed = 0;
  s.named_blocks = 0;
  s.last_name = 0;
}

void Scheduler::preempt(int64_t id, StepPlan& plan) {
  Sequence& s = seq(id);
  release_cache(s);
  ++s.preemptions;
  running_.erase(std::find(running_.begin(), running_.end(), id));
  waiting_.push_front(id);
  plan.preempted.push_back(id);
}

void Scheduler::reuse_prefix(Sequence& s) {
  if (s.num_computed > 0 || !s.blocks.empty()) return;
  // At least the last token is computed: its logits choose the next token.
  const std::span<const int64_t> known(s.tokens.data(), s.tokens.size() - 1);
  const std::vector<int> cached = blocks_->lookup_prefix(known);
  blocks_->acquire(cached);
  s.blocks = cached;
  s.named_blocks = static_cast<int64_t>(cached.size());
  s.num_computed = s.named_blocks * blocks_->block_size();
  for (int64_t i = 0; i < s.named_blocks; ++i) {
    const int64_t bs = blocks_->block_size();
    s.last_name = KvBlockManager::block_hash(
        s.last_name, std::span<const int64_t>(s.tokens.data() + i * bs, bs));
  }
}

StepPlan Scheduler::schedule() {
  return config_.policy == SchedulerPolicy::kStatic ? schedule_static() : schedule_continuous();
}

StepPlan Scheduler::schedule_continuous() {
  StepPlan plan;
  int64_t budget = config_.max_num_batched_tokens;
  // 1. Every running decode, oldest first; when blocks run out, the newest request yields.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence& s = seq(running_[i]);
    if (s.remaining() != 1) {
      ++i;
      continue;
    }
    while (fits(s, 1) < 1 && running_.back() != s.id) preempt(running_.back(), plan);
    if (fits(s, 1) < 1) {
      preempt(s.id, plan);  // the newest itself: nothing left to take from
      continue;
    }
    add_chunk(s, 1, plan);
    --budget;
    ++i;
  }
  // 2. Prefill chunks of running requests whose prompt is partly computed.
  for (int64_t id : running_) {
    Sequence& s = seq(id);
    if (budget == 0) break;
    if (s.remaining() <= 1) continue;
    const int64_t length = fits(s, std::min(s.remaining(), budget));
    if (length == 0) continue;
    add_chunk(s, length, plan);
    budget -= length;
  }
  // 3. Waiting requests, first come first served: the head waits rather than being overtaken.
  while (!waiting_.empty() && budget > 0 &&
         static_cast<int>(running_.size()) < config_.max_num_seqs) {
    Sequence& s = seq(waiting_.front());
    reuse_prefix(s);
    const int64_t length = fits(s, std::min(s.remaining(), budget));
    if (length == 0) {
      release_cache(s);  // give the reused prefix back until it can run
      break;
    }
    waiting_.pop_front();
    running_.push_back(s.id);
    add_chunk(s, length, plan);
    budget -= length;
  }
  return plan;
}

StepPlan Scheduler::schedule_static() {
  StepPlan plan;
  if (running_.empty()) {
    // Admit a batch: whole prompts, as many as fit in the pool with room for their outputs.
    int64_t reserved = 0;
    const int64_t bs = blocks_->block_size();
    while (!waiting_.empty() && static_cast<int>(running_.size()) < config_.max_num_seqs) {
      const Sequence& s = seq(waiting_.front());
      const int64_t need =
          (static_cast<int64_t>(s.tokens.size()) + s.max_new_tokens - s.num_new() - 1 + bs - 1) /
          bs;
      if (reserved + need > blocks_->num_free()) break;
      reserved += need;
      running_.push_back(s.id);
      waiting_.pop_front();
    }
  }
  for (int64_t id : running_) {
    Sequence& s = seq(id);
    add_chunk(s, s.remaining(), plan);
  }
  return plan;
}

std::vector<int64_t> Scheduler::complete(const StepPlan& plan,
                                         const std::map<int64_t, int64_t>& sampled) {
  std::vector<int64_t> finished;
  const int64_t bs = blocks_->block_size();
  for (const ScheduledChunk& c : plan.chunks) {
    auto it = sequences_.find(c.seq_id);
    if (it == sequences_.end()) continue;  // finished early (finish()) while the step ran
    Sequence& s = *it->second;
    WEFT_CHECK_EQ(s.num_computed, c.start) << "request " << s.id;
    s.num_computed += c.length;
    for (; s.named_blocks < s.num_computed / bs; ++s.named_blocks) {
      const std::span<const int64_t> block(s.tokens.data() + s.named_blocks * bs, bs);
      s.last_name = blocks_->name_full_block(s.blocks[s.named_blocks], s.last_name, block);
    }
    if (!c.samples) continue;
    auto token = sampled.find(s.id);
    WEFT_CHECK(token != sampled.end()) << "no token sampled for request " << s.id;
    s.tokens.push_back(token->second);
    if (s.num_new() >= s.max_new_tokens) finished.push_back(s.id);
  }
  for (int64_t id : finished) drop(id);
  return finished;
}

void Scheduler::finish(int64_t id) {
  if (sequences_.count(id)) drop(id);
}

void Scheduler::drop(int64_t id) {
  Sequence& s = seq(id);
  blocks_->release(s.blocks);
  if (auto r = std::find(running_.begin(), running_.end(), id); r != running_.end()) {
    running_.erase(r);
  }
  if (auto w = std::find(waiting_.begin(), waiting_.end(), id); w != waiting_.end()) {
    waiting_.erase(w);
  }
  sequences_.erase(id);
}

}  // namespace weft::serve
