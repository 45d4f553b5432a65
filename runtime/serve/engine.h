// The serving engine (docs/serving.md): requests in, tokens out, one step at a time.
//
//   rank 0:  submit() / cancel() from any thread  ->  inbox  ->  run() loop on the main thread:
//            Scheduler::schedule() -> broadcast the step -> CausalLM::forward_paged -> sample ->
//            stop conditions -> Scheduler::complete() -> each request's update callback
//   others:  run_worker(): receive each step, run their shard of forward_paged, until shutdown
//
// Every rank holds its tensor-parallel heads' share of the paged KV cache and its pipeline
// stage's layers; only rank 0 holds the scheduler, the block manager and the samplers. With
// kernels::set_batch_invariant (turned on here), a request's tokens do not depend on what else
// runs in its steps: greedy output served among 30 requests equals it served alone.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "models/causal_lm.h"
#include "nlohmann/json.hpp"
#include "parallel/mesh.h"
#include "runtime/serve/disaggregation.h"
#include "runtime/serve/kv_block_manager.h"
#include "runtime/serve/sampling.h"
#include "runtime/serve/scheduler.h"

namespace weft::serve {

struct EngineConfig {
  SchedulerConfig scheduler;
  int block_size = 16;
  int64_t num_blocks = 0;      // 0: from kv_cache_bytes
  int64_t kv_cache_bytes = 0;  // this rank's KV pool, when num_blocks is 0
  int64_t max_model_len = 0;   // 0: the model's max_position_embeddings
  int64_t max_queue = 256;     // requests beyond the running ones before submit() refuses
  bool prefix_caching = true;
  std::vector<int64_t> eos_ids;  // the model's end-of-sequence tokens
  // Shift parallelism (docs/serving.md "Shift parallelism"): a step of more than this many
  // tokens (and at least one per rank) runs in sequence-parallel mode on the model given to
  // set_shift_model; the others in tensor-parallel mode. -1: off.
  int64_t shift_threshold = -1;
  // Disaggregated serving: a prompt of at most this many tokens skips the prefill instance and
  // its decode instance computes it (no KV transfer; Splitwise's short-prompt routing).
  int64_t disagg_local_prefill = 0;
};

// One request's sampling and stop conditions (the OpenAI fields, vLLM's extensions).
struct GenerationParams {
  int64_t max_tokens = 16;
  float temperature = 1.0f;  // 0: greedy
  float top_p = 1.0f;
  int top_k = 0;  // 0: off
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;        // text that ends the output (not included)
  std::vector<int64_t> stop_token_ids;  // tokens that end it (not included in the text)
  bool ignore_eos = false;
  int logprobs = -1;  // -1: none; k >= 0: the sampled token's log-probability and the top k
};

// Turns generated ids into text as they arrive, never splitting a UTF-8 character (a tokenizer's
// streaming decoder). A model without a tokenizer has none: its text stays empty.
class Detokenizer {
 public:
  virtual ~Detokenizer() = default;
  virtual std::string push(int64_t id) = 0;  // the text completed by this token
  virtual std::string finish() = 0;          // whatever is held back, at the end
};
using DetokenizerFactory = std::function<std::unique_ptr<Detokenizer>()>;

struct GeneratedToken {
  int64_t id = 0;
  float logprob = 0;                           // when logprobs were asked for
  std::vector<std::pair<int64_t, float>> top;  // the top-k alternatives
};

// What a request learned in one step, delivered on the engine's thread.
struct RequestUpdate {
  int64_t request = 0;
  std::vector<GeneratedToken> tokens;  // new tokens (their text may be held back; see `text`)
  std::string text;                    // newly final text: whole characters, stop strings cut
  bool finished = false;
  // "stop" | "length" | "abort" (cancelled or engine stopping) | "error" (a rank died: `error`)
  std::string finish_reason;
  std::string error;  // finish_reason "error": what the client is told
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_prompt_tokens = 0;  // prompt tokens served from the prefix cache
};
using UpdateFn = std::function<void(const RequestUpdate&)>;

// Counters for /metrics (a consistent snapshot).
struct EngineStats {
  int running = 0;
  int waiting = 0;
  int kv_blocks_total = 0;
  int kv_blocks_used = 0;
  double prefix_hit_rate = 0;
  int64_t prompt_tokens = 0;  // prompt tokens computed (prefix-cache hits excluded)
  int64_t generated_tokens = 0;
  int64_t requests_finished = 0;
  int64_t requests_rejected = 0;  // queue full
  int64_t requests_aborted = 0;   // cancelled (client gone) or cut short by shutdown
  int64_t preemptions = 0;
  int64_t steps = 0;
  int64_t sequence_parallel_steps = 0;  // shift parallelism: steps run in SP mode
  // Disaggregated serving, rank 0: requests handed to decode instances, and the KV bytes the
  // prefill instances' leaders sent them (each prefill rank sends its own heads).
  int64_t disaggregated_requests = 0;
  int64_t kv_transfer_bytes = 0;
  std::vector<int64_t> prefills;     // requests exported by each prefill instance
  int64_t lost_instances = 0;        // decode instances lost to a dead rank (served on without)
  int64_t rerouted_requests = 0;     // ... and requests moved off them before any output
  std::vector<double> ttft_seconds;  // one per finished request, most recent last (capped)
  std::vector<double> tpot_seconds;
};

class Engine {
 public:
  // Collective over `world` (every rank calls it with the same config): sizes and allocates the
  // KV pool. `mesh` null: one rank. Errors: a model that cannot serve (linear attention), a pool
  // smaller than one request of max_model_len... of one block, a world that is not tp x pp.
  static absl::StatusOr<std::unique_ptr<Engine>> create(models::CausalLM& model,
                                                        comm::Communicator& world,
                                                        const parallel::Mesh* mesh,
                                                        EngineConfig config,
                                                        DetokenizerFactory detokenizer = nullptr);

  // Shift parallelism: `full` holds every weight on each rank (a one-rank layout) and runs the
  // steps above config.shift_threshold Ulysses-style over `group` (the mesh's tp group), into
  // this engine's KV cache. Every rank calls it, before serving.
  void set_shift_model(models::CausalLM* full, comm::Communicator* group) {
    shift_model_ = full;
    shift_group_ = group;
  }
  // Disaggregated serving (runtime/serve/engine_disagg.cc; docs/serving.md): every rank calls
  // it before serving. This engine is then a prefill instance's (rank 0 also runs the front:
  // routing, forwarding, relaying the other instances' messages) or a decode instance's.
  void set_disaggregation(std::unique_ptr<Disaggregation> disagg);
  [[nodiscard]] const Disaggregation* disaggregation() const { return disagg_.get(); }
  // Rank 0: decode instance g is lost (a rank of it died; the health monitor wrote it off). Its
  // requests still prefilling are cancelled there (their blocks freed); those that have sent
  // their client nothing start again on a live decode instance, which prefills them itself; the
  // others fail with `error`. No request goes to it again. Returns false, changing nothing, when
  // it is the last decode instance left.
  bool lose_decode_instance(int g, const std::string& error);
  // The leader of an instance other than rank 0's: takes requests from rank 0 (a decode
  // instance: with their keys and values) and steps until rank 0 says stop; its updates (a
  // decode instance) or finished prefills (a prefill instance) go back to rank 0.
  void run_leader();
  ~Engine();

  [[nodiscard]] int64_t vocab_size() const { return model_.config().vocab_size; }
  [[nodiscard]] int64_t max_model_len() const { return config_.max_model_len; }
  [[nodiscard]] int64_t num_blocks() const { return config_.num_blocks; }
  [[nodiscard]] const EngineConfig& config() const { return config_; }

  // ---- rank 0, any thread --------------------------------------------------------------------
  // Checks a request before it is queued: ids in the vocabulary, a non-empty prompt that with
  // max_tokens fits max_model_len and the KV pool, sampling values in range. The message names
  // the field (OpenAI's `param`) and the problem.
  struct Invalid {
    std::string param;
    std::string message;
  };
  [[nodiscard]] std::optional<Invalid> check(const std::vector<int64_t>& prompt,
                                             const GenerationParams& params) const;
  // Queues a checked request; `on_update` runs on the engine thread. ResourceExhausted when the
  // queue is full (the server's 429); FailedPrecondition once the engine is stopping.
  absl::StatusOr<int64_t> submit(std::vector<int64_t> prompt, GenerationParams params,
                                 UpdateFn on_update);
  // Ends a request (its client went away): frees its blocks; its last update says "abort".
  void cancel(int64_t request);
  [[nodiscard]] EngineStats stats() const;

  // ---- rank 0, the main thread ---------------------------------------------------------------
  // Runs one step if there is work (after taking in submissions and cancellations); false when
  // idle.
  bool step();
  // Steps until `stop` is set, sleeping while idle. Then exactly one of:
  void run(const std::atomic<bool>& stop);
  // aborts what is left and releases the other ranks (their run_worker returns), or
  void shutdown();
  // (a rank has died: docs/serving.md "Disaggregated prefill and decode") ends every request
  // with finish_reason "error" and `message`, refuses new ones with it, and talks to no other
  // rank.
  void fail_all(const std::string& message);
  // Steps until every submitted request has finished (offline generation), then releases the
  // other ranks.
  void run_until_done();

  // ---- every other rank ----------------------------------------------------------------------
  void run_worker();

 private:
  struct Request;
  Engine(models::CausalLM& model, comm::Communicator& world, const parallel::Mesh* mesh,
         EngineConfig config, DetokenizerFactory detokenizer);
  struct FrontRequest;
  // Rank 0 (runtime/serve/engine_disagg.cc): a request for a decode instance; its prefill runs
  // here first (the prompt's whole blocks before its last token), unless too short.
  absl::StatusOr<int64_t> submit_front(std::vector<int64_t> prompt, GenerationParams params,
                                       UpdateFn on_update);
  // A prefill leader: queues the internal request `id` that prefills `prompt` (the front
  // request's whole blocks) for decode instance `to`.
  void queue_prefill(int64_t id, int64_t front, std::vector<int64_t> prompt, int to);
  // A prefill leader, in step(): the requests whose prefill the plan completes send their KV
  // (every rank of the instance, run_export, which returns each request's bytes from this rank)
  // and go to their decode instance (through rank 0).
  void export_prefills(const StepPlan& plan);
  std::vector<int64_t> run_export(const Tensor& payload);
  // Rank 0: prefill instance `from` has sent request `id`'s KV (`bytes` from its leader).
  void forward_front(int64_t id, int from, int tag, int64_t tokens, int64_t bytes);
  void cancel_front(int64_t id);
  // Rank 0, holding front_mu_: the instance in [first, end) with the least load_, lost ones
  // skipped (the router's choice).
  [[nodiscard]] int least_loaded(int first, int end) const;
  void relay_loop();
  void stop_disaggregation();
  // A decode leader: the request's KV into fresh blocks named for prefix reuse (every rank of
  // the instance, run_import), then the request itself.
  void import_request(const nlohmann::json& message, std::map<int64_t, int64_t>& local_of);
  void run_import(const Tensor& payload);
  // Stops taking requests and ends every one still here with "abort" (`error` empty: the end of
  // run()) or "error".
  void end_all(const std::string& error = "");
  // Rank 0 of disaggregated serving: the same for the requests the decode instances hold.
  void end_front(const std::string& error);
  void take_inbox();
  void shutdown_workers();
  // Shift parallelism: whether a step of `tokens` runs in sequence-parallel mode.
  [[nodiscard]] bool sequence_parallel_step(int64_t tokens) const;
  // Runs the model over the step (every rank) and returns the sampling rows' logits on rank 0.
  Tensor run_model(const models::PagedBatch& batch);
  [[nodiscard]] models::PagedBatch build_batch(const StepPlan& plan) const;
  void deliver(Request& r, const GeneratedToken& token, RequestUpdate& update);
  void finish(Request& r, const std::string& reason, RequestUpdate& update);
  void record_finish(const Request& r, bool aborted);

  models::CausalLM& model_;
  models::CausalLM* shift_model_ = nullptr;
  comm::Communicator* shift_group_ = nullptr;
  comm::Communicator& world_;
  const parallel::Mesh* mesh_;
  EngineConfig config_;
  DetokenizerFactory detokenizer_;
  std::unique_ptr<models::PagedKvCache> cache_;
  std::unique_ptr<KvBlockManager> blocks_;
  std::unique_ptr<Scheduler> scheduler_;
  std::map<int64_t, std::unique_ptr<Request>> requests_;  // engine thread only
  std::mt19937_64 seeds_;                                 // for requests without a seed

  mutable std::mutex mu_;  // guards the fields below
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Request>> inbox_;
  std::vector<int64_t> cancelled_;
  int64_t next_id_ = 1;
  int64_t unfinished_ = 0;  // submitted, not yet finished
  bool stopping_ = false;
  std::string failure_;  // fail_all()'s message, for the requests that come after it
  EngineStats stats_;

  std::unique_ptr<Disaggregation> disagg_;
  std::mutex front_mu_;  // rank 0: guards the fields below
  std::map<int64_t, std::unique_ptr<FrontRequest>> front_;
  // Per instance: a prefill instance's prompt tokens queued or running, a decode instance's
  // requests in flight (the router takes the least loaded of each).
  std::vector<int64_t> load_;
  std::vector<bool> lost_;  // per instance: lost (lose_decode_instance)
  int prefills_open_ = 0;   // prefill instances other than rank 0's that have not said "bye"
  std::condition_variable prefills_closed_;
  int next_tag_ = 0;  // engine thread
  std::thread relay_;
};

// The model directory's end-of-sequence ids: generation_config.json's eos_token_id (a number or
// a list), else config.json's; empty when neither says.
std::vector<int64_t> read_eos_ids(const std::string& model_dir);

}  // namespace weft::serve
