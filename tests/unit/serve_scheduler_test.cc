// The scheduler with no model and no MPI: stall-free packing (decodes first, then prefill chunks
// up to the token budget), chunked prefill, max_num_seqs, preemption by recompute that changes
// no output, first-come-first-served admission, prefix reuse, and the static baseline.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "runtime/serve/scheduler.h"

namespace weft::serve {
namespace {

// The fake model's next token: a function of the request and the position alone, as a greedy
// model's is of the prefix, so a recomputed request must produce the same tokens.
int64_t fake_token(int64_t id, size_t position) {
  return static_cast<int64_t>((id * 7919 + position * 31) % 1000);
}

std::vector<int64_t> prompt_of(int64_t id, int64_t length) {
  std::vector<int64_t> p;
  for (int64_t i = 0; i < length; ++i) p.push_back(1000 + id * 100 + i);
  return p;
}

// Tokens sampled per request, in order.
using Generated = std::map<int64_t, std::vector<int64_t>>;

// One step: checks the plan's invariants and completes it with fake tokens.
std::vector<int64_t> run_step(Scheduler& s, const SchedulerConfig& config, StepPlan& plan,
                              Generated* generated = nullptr) {
  plan = s.schedule();
  std::set<int64_t> ids;
  bool prefill_seen = false;
  std::map<int64_t, int64_t> sampled;
  for (const ScheduledChunk& c : plan.chunks) {
    EXPECT_TRUE(ids.insert(c.seq_id).second) << "request " << c.seq_id << " twice in a step";
    const Sequence* q = s.find(c.seq_id);
    EXPECT_EQ(c.start, q->num_computed);
    const bool decode =
        c.length == 1 && c.start + 1 == static_cast<int64_t>(q->tokens.size()) && q->num_new() > 0;
    if (config.policy == SchedulerPolicy::kContinuous) {
      EXPECT_FALSE(decode && prefill_seen) << "decodes come before prefill chunks";
    }
    prefill_seen |= !decode;
    if (c.samples) {
      sampled[c.seq_id] = fake_token(c.seq_id, q->tokens.size());
      if (generated) (*generated)[c.seq_id].push_back(sampled[c.seq_id]);
    }
  }
  if (config.policy == SchedulerPolicy::kContinuous) {
    EXPECT_LE(plan.num_tokens, config.max_num_batched_tokens);
  }
  EXPECT_LE(static_cast<int>(ids.size()), config.max_num_seqs);
  return s.complete(plan, sampled);
}

// Runs until every request finished; returns the finish order. Fails on a stall.
std::vector<int64_t> run_all(Scheduler& s, const SchedulerConfig& config) {
  std::vector<int64_t> order;
  for (int step = 0; step < 100000 && (s.num_waiting() + s.num_running()) > 0; ++step) {
    StepPlan plan;
    for (int64_t id : run_step(s, config, plan)) order.push_back(id);
    if (plan.empty()) {
      ADD_FAILURE() << "stalled with " << s.num_waiting() << " waiting";
      break;
    }
  }
  return order;
}

TEST(Scheduler, PacksEveryDecodeThenPrefillChunksUpToTheBudget) {
  KvBlockManager blocks(64, 4, true);
  SchedulerConfig config{.max_num_seqs = 8, .max_num_batched_tokens = 16};
  Scheduler s(config, &blocks);
  for (int64_t id = 0; id < 3; ++id) ASSERT_TRUE(s.add(id, prompt_of(id, 4), 10).ok());
  StepPlan plan;
  run_step(s, config, plan);  // three prefills of 4 tokens
  EXPECT_EQ(plan.num_tokens, 12);
  ASSERT_TRUE(s.add(3, prompt_of(3, 40), 5).ok());
  run_step(s, config, plan);
  ASSERT_EQ(plan.chunks.size(), 4u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(plan.chunks[i].length, 1);
    EXPECT_TRUE(plan.chunks[i].samples);
  }
  EXPECT_EQ(plan.chunks[3].seq_id, 3);
  EXPECT_EQ(plan.chunks[3].length, 13);  // the budget's rest
  EXPECT_FALSE(plan.chunks[3].samples);
  EXPECT_EQ(plan.num_tokens, 16);
}

TEST(Scheduler, ChunksALongPromptAndSamplesOnlyAtItsEnd) {
  KvBlockManager blocks(64, 4, true);
  SchedulerConfig config{.max_num_seqs = 4, .max_num_batched_tokens = 8};
  Scheduler s(config, &blocks);
  ASSERT_TRUE(s.add(7, prompt_of(7, 20), 3).ok());
  std::vector<int64_t> lengths;
  StepPlan plan;
  for (int i = 0; i < 3; ++i) {
    run_step(s, config, plan);
    lengths.push_back(plan.chunks.at(0).length);
    EXPECT_EQ(plan.chunks[0].samples, i == 2);
  }
  EXPECT_EQ(lengths, (std::vector<int64_t>{8, 8, 4}));
  EXPECT_EQ(s.find(7)->num_new(), 1);
}

TEST(Scheduler, NeverRunsMoreThanMaxNumSeqs) {
  KvBlockManager blocks(256, 4, true);
  SchedulerConfig config{.max_num_seqs = 3, .max_num_batched_tokens = 512};
  Scheduler s(config, &blocks);
  for (int64_t id = 0; id < 10; ++id) ASSERT_TRUE(s.add(id, prompt_of(id, 5), 4).ok());
  run_all(s, config);  // run_step asserts the bound every step
  EXPECT_EQ(blocks.num_used(), 0);
}

TEST(Scheduler, PreemptsTheNewestWhenBlocksRunOutAndRecomputesTheSameTokens) {
  // 6 blocks of 4 slots; two requests of 8 + 12 tokens need 5 blocks each at the end.
  KvBlockManager blocks(6, 4, /*prefix_caching=*/false);
  SchedulerConfig config{.max_num_seqs = 4, .max_num_batched_tokens = 64};
  Scheduler s(config, &blocks);
  ASSERT_TRUE(s.add(1, prompt_of(1, 8), 12).ok());
  ASSERT_TRUE(s.add(2, prompt_of(2, 8), 12).ok());
  bool preempted = false;
  Generated generated;
  for (int step = 0; step < 1000 && s.num_waiting() + s.num_running() > 0; ++step) {
    StepPlan plan;
    run_step(s, config, plan, &generated);
    for (int64_t id : plan.preempted) {
      EXPECT_EQ(id, 2) << "the newer request yields";
      preempted = true;
    }
  }
  EXPECT_TRUE(preempted);
  // Each token sampled once, at the position a run without preemption samples it.
  for (int64_t id : {1, 2}) {
    ASSERT_EQ(generated[id].size(), 12u) << id;
    for (size_t k = 0; k < 12; ++k) EXPECT_EQ(generated[id][k], fake_token(id, 8 + k));
  }
  EXPECT_EQ(blocks.num_used(), 0);
}

TEST(Scheduler, RandomWorkloadsFinishEveryRequestWithNoLeak) {
  for (SchedulerPolicy policy : {SchedulerPolicy::kContinuous, SchedulerPolicy::kStatic}) {
    SCOPED_TRACE(policy == SchedulerPolicy::kStatic ? "static" : "continuous");
    std::mt19937_64 rng(11);
    KvBlockManager blocks(48, 4, true);
    SchedulerConfig config{.max_num_seqs = 6, .max_num_batched_tokens = 24, .policy = policy};
    Scheduler s(config, &blocks);
    std::map<int64_t, int64_t> wanted;
    for (int64_t id = 0; id < 50; ++id) {
      wanted[id] = 1 + static_cast<int64_t>(rng() % 16);
      ASSERT_TRUE(
          s.add(id, prompt_of(id % 5, 1 + static_cast<int64_t>(rng() % 40)), wanted[id]).ok());
    }
    const std::vector<int64_t> order = run_all(s, config);
    EXPECT_EQ(std::set<int64_t>(order.begin(), order.end()).size(), 50u);
    EXPECT_EQ(blocks.num_used(), 0);
  }
}

TEST(Scheduler, AdmitsFirstComeFirstServed) {
  KvBlockManager blocks(64, 4, true);
  SchedulerConfig config{.max_num_seqs = 1, .max_num_batched_tokens = 64};
  Scheduler s(config, &blocks);
  for (int64_t id = 0; id < 5; ++id) ASSERT_TRUE(s.add(id, prompt_of(id, 6 - id), 3).ok());
  EXPECT_EQ(run_all(s, config), (std::vector<int64_t>{0, 1, 2, 3, 4}));
}

TEST(Scheduler, ANewRequestReusesTheCachedBlocksOfASharedPrefix) {
  KvBlockManager blocks(64, 4, true);
  SchedulerConfig config{.max_num_seqs = 4, .max_num_batched_tokens = 64};
  Scheduler s(config, &blocks);
  std::vector<int64_t> system = prompt_of(9, 12);  // three full blocks
  std::vector<int64_t> a = system, b = system;
  a.push_back(1);
  b.push_back(2);
  ASSERT_TRUE(s.add(1, a, 2).ok());
  run_all(s, config);
  ASSERT_TRUE(s.add(2, b, 2).ok());
  StepPlan plan;
  run_step(s, config, plan);
  ASSERT_EQ(plan.chunks.size(), 1u);
  EXPECT_EQ(plan.chunks[0].start, 12);  // only the 13th token is computed
  EXPECT_EQ(plan.chunks[0].length, 1);
  EXPECT_TRUE(plan.chunks[0].samples);
  // A prompt that is exactly the cached blocks still computes its last token.
  ASSERT_TRUE(s.add(3, system, 2).ok());
  run_step(s, config, plan);
  EXPECT_EQ(plan.chunks.back().seq_id, 3);
  EXPECT_EQ(plan.chunks.back().start, 8);
  EXPECT_EQ(plan.chunks.back().length, 4);
}

TEST(Scheduler, StaticBatchingAdmitsNothingWhileABatchRuns) {
  KvBlockManager blocks(64, 4, true);
  SchedulerConfig config{
      .max_num_seqs = 8, .max_num_batched_tokens = 16, .policy = SchedulerPolicy::kStatic};
  Scheduler s(config, &blocks);
  ASSERT_TRUE(s.add(0, prompt_of(0, 30), 5).ok());
  StepPlan plan;
  run_step(s, config, plan);
  EXPECT_EQ(plan.chunks.at(0).length, 30);  // whole prompt, no chunking
  ASSERT_TRUE(s.add(1, prompt_of(1, 3), 2).ok());
  for (int i = 0; i < 4; ++i) {
    run_step(s, config, plan);
    for (const ScheduledChunk& c : plan.chunks) EXPECT_EQ(c.seq_id, 0);
  }
  EXPECT_EQ(s.find(0), nullptr);  // finished after 5 tokens
  run_step(s, config, plan);
  EXPECT_EQ(plan.chunks.at(0).seq_id, 1);
}

TEST(Scheduler, RefusesRequestsThatCanNeverRun) {
  KvBlockManager blocks(4, 4, true);
  Scheduler s(SchedulerConfig{}, &blocks);
  EXPECT_FALSE(s.add(1, {}, 4).ok());
  EXPECT_FALSE(s.add(2, {1, 2}, 0).ok());
  const absl::Status too_big = s.add(3, prompt_of(3, 10), 8);
  EXPECT_NE(too_big.message().find("more than the cache's 16"), std::string::npos) << too_big;
  EXPECT_TRUE(s.add(4, prompt_of(4, 10), 7).ok());  // 16 slots exactly
}

}  // namespace
}  // namespace weft::serve
