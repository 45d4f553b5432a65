// The serving scheduler (docs/serving.md): a plain function of the waiting and running requests
// and the free KV blocks to the next step's plan, testable with no model and no MPI.
//
// Continuous policy (Sarathi-Serve stall-free batching): every step packs all running decodes
// first, then prefill chunks — of running requests whose prompt is partly computed, then of
// waiting requests in arrival order — until --max-num-batched-tokens tokens or --max-num-seqs
// requests. A decode that finds no free block preempts the newest running request (recompute:
// its blocks are freed and it waits again at the front of the queue). New requests reuse cached
// prefix blocks.
//
// Static policy (the baseline): a batch of waiting requests is admitted and prefilled whole, and
// nothing new is admitted until every request of the batch has finished.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "runtime/serve/kv_block_manager.h"

namespace weft::serve {

enum class SchedulerPolicy { kContinuous, kStatic };

struct SchedulerConfig {
  int max_num_seqs = 64;
  int max_num_batched_tokens = 512;
  SchedulerPolicy policy = SchedulerPolicy::kContinuous;
};

// A request as the scheduler sees it.
struct Sequence {
  int64_t id = 0;
  std::vector<int64_t> tokens;  // the prompt, then every sampled token
  int64_t prompt_len = 0;
  int64_t max_new_tokens = 0;
  int64_t arrival = 0;       // order of add()
  int64_t num_computed = 0;  // leading tokens whose K/V are in the cache
  std::vector<int> blocks;   // the block table: token t lives in blocks[t / block_size]
  int64_t named_blocks = 0;  // leading full blocks already named for prefix reuse
  uint64_t last_name = 0;    // the name of block named_blocks - 1 (0: none)
  int64_t preemptions = 0;

  [[nodiscard]] int64_t num_new() const { return static_cast<int64_t>(tokens.size()) - prompt_len; }
  // Tokens whose K/V the next steps must compute (1 for a decode).
  [[nodiscard]] int64_t remaining() const {
    return static_cast<int64_t>(tokens.size()) - num_computed;
  }
};

// Positions [start, start + length) of sequence `seq_id` run this step; when the chunk reaches
// the sequence's last token, the model samples the next one.
struct ScheduledChunk {
  int64_t seq_id = 0;
  int64_t start = 0;
  int64_t length = 0;
  bool samples = false;
};

struct StepPlan {
  std::vector<ScheduledChunk> chunks;  // decodes first, then prefill chunks
  std::vector<int64_t> preempted;      // requests whose blocks were freed for this step
  int64_t num_tokens = 0;

  [[nodiscard]] bool empty() const { return chunks.empty(); }
};

class Scheduler {
 public:
  // `blocks` outlives the scheduler.
  Scheduler(const SchedulerConfig& config, KvBlockManager* blocks);

  // Queues a request. Errors: an empty prompt, max_new_tokens < 1, or a request whose prompt
  // plus new tokens could never fit in the whole KV pool.
  absl::Status add(int64_t id, std::vector<int64_t> prompt, int64_t max_new_tokens);
  // The next step. Empty when nothing is waiting or running.
  StepPlan schedule();
  // After the model ran `plan`: `sampled[seq_id]` is the token sampled for each chunk that
  // samples. Advances the computed positions, names newly full blocks for prefix reuse, appends
  // the tokens; returns the requests that reached max_new_tokens (their blocks are freed).
  std::vector<int64_t> complete(const StepPlan& plan, const std::map<int64_t, int64_t>& sampled);
  // Ends a request early (a stop condition, a client that went away); frees its blocks.
  void finish(int64_t id);

  [[nodiscard]] const Sequence* find(int64_t id) const;
  [[nodiscard]] int num_waiting() const { return static_cast<int>(waiting_.size()); }
  [[nodiscard]] int num_running() const { return static_cast<int>(running_.size()); }

 private:
  Sequence& seq(int64_t id) { return *sequences_.at(id); }
  // Grows the block table to hold `tokens` tokens; false (and no change) when blocks lack.
  bool grow(Sequence& s, int64_t tokens);
  // How many of the next `want` tokens of `s` fit in its blocks plus the free ones.
  int64_t fits(const Sequence& s, int64_t want) const;
  // Frees the request's blocks and forgets what they held (it will be prefilled again).
  void release_cache(Sequence& s);
  void preempt(int64_t id, StepPlan& plan);
  // First admission of a waiting request: reuse the cached blocks of its prompt's prefix.
  void reuse_prefix(Sequence& s);
  void drop(int64_t id);
  StepPlan schedule_continuous();
  StepPlan schedule_static();
  void add_chunk(Sequence& s, int64_t length, StepPlan& plan);

  SchedulerConfig config_;
  KvBlockManager* blocks_;
  std::map<int64_t, std::unique_ptr<Sequence>> sequences_;
  std::deque<int64_t> waiting_;   // front first
  std::vector<int64_t> running_;  // in arrival order
  int64_t arrivals_ = 0;
};

}  // namespace weft::serve
