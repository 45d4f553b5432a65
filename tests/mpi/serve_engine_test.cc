// weft-mpi-ranks: 1 2 4
// The serving engine's batch invariance (docs/serving.md): a request's greedy tokens are the same
// served alone, among 30 concurrent requests, with prefill chunked into tiny pieces and requests
// preempted for lack of KV blocks, and with prefix-cache hits — on one rank, and on two ranks
// split by tensor parallelism or by pipeline stages. The fixtures' greedy continuation equals
// the PyTorch reference's (one rank and N ranks alike), and a vocabulary tp does not divide is
// served at tp 2 as on one rank.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "comm/mpi_communicator.h"
#include "models/causal_lm.h"
#include "parallel/mesh.h"
#include "runtime/io/safetensors.h"
#include "runtime/serve/engine.h"
#include "tests/support/mpi_world.h"
#include "tests/support/odd_vocab_model.h"
#include "tests/support/test_util.h"

namespace weft::serve {
namespace {

using ::weft::testing::fixtures_dir;

comm::Communicator& world() { return ::weft::testing::mpi_world(); }

struct Request {
  std::vector<int64_t> prompt;
  int64_t max_tokens = 0;
};

// 30 requests: prompts of 1..40 tokens, a third of them opening with the same 32 tokens (two
// full blocks of 16: prefix-cache hits), each within the fixtures' 64 positions.
std::vector<Request> make_requests(int64_t vocab) {
  std::mt19937_64 rng(7);
  std::vector<int64_t> shared(32);
  for (int64_t& t : shared) t = static_cast<int64_t>(rng() % vocab);
  std::vector<Request> out;
  for (int i = 0; i < 30; ++i) {
    Request r;
    const int64_t len = 1 + static_cast<int64_t>(rng() % 40);
    if (i % 3 == 0) r.prompt = shared;
    while (static_cast<int64_t>(r.prompt.size()) < len + (i % 3 == 0 ? 4 : 0)) {
      r.prompt.push_back(static_cast<int64_t>(rng() % vocab));
    }
    r.max_tokens = 1 + static_cast<int64_t>(rng() % std::min<int64_t>(20, 64 - r.prompt.size()));
    out.push_back(std::move(r));
  }
  return out;
}

struct Served {
  std::vector<std::vector<int64_t>> tokens;  // per request, rank 0 only
  // Each token's log-probability: equal to the last bit only if the logits are (tokens alone
  // could hide a numerical difference behind a wide argmax gap).
  std::vector<std::vector<float>> logprobs;
  EngineStats stats;
};

// Runs `requests` (all at once, or one engine run per request when `alone`) on every rank of
// `ranks` (default: the world).
// `shift`: the full-weights model of shift parallelism's sequence-parallel steps (over the mesh's
// tp group; config.shift_threshold decides which steps).
Served serve(models::CausalLM& model, const parallel::Mesh* mesh, EngineConfig config,
             const std::vector<Request>& requests, bool alone, comm::Communicator& ranks = world(),
             models::CausalLM* shift = nullptr) {
  config.eos_ids.clear();  // lengths stay fixed: the comparison is token by token
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::create(model, ranks, mesh, config);
  WEFT_CHECK(engine.ok()) << engine.status().message();
  if (shift != nullptr) (*engine)->set_shift_model(shift, &mesh->tp());
  Served out;
  out.tokens.resize(requests.size());
  out.logprobs.resize(requests.size());
  const size_t rounds = alone ? requests.size() : 1;
  for (size_t round = 0; round < rounds; ++round) {
    if (ranks.rank() != 0) {
      (*engine)->run_worker();
      continue;
    }
    std::map<int64_t, size_t> index;
    for (size_t i = 0; i < requests.size(); ++i) {
      if (alone && i != round) continue;
      GenerationParams params;
      params.max_tokens = requests[i].max_tokens;
      params.temperature = 0;
      params.logprobs = 0;
      absl::StatusOr<int64_t> id =
          (*engine)->submit(requests[i].prompt, params, [&out, &index](const RequestUpdate& u) {
            for (const GeneratedToken& t : u.tokens) {
              out.tokens[index.at(u.request)].push_back(t.id);
              out.logprobs[index.at(u.request)].push_back(t.logprob);
            }
          });
      WEFT_CHECK(id.ok()) << id.status().message();
      index[*id] = i;
    }
    (*engine)->run_until_done();
  }
  if (ranks.rank() == 0) out.stats = (*engine)->stats();
  return out;
}

// Rank 0: every request's tokens equal `want`'s, its log-probabilities within 1e-5 (another
// layout sums in another order).
void expect_served_alike(const Served& got, const Served& want,
                         const std::vector<Request>& requests) {
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_EQ(want.tokens[i].size(), static_cast<size_t>(requests[i].max_tokens)) << i;
    EXPECT_EQ(got.tokens[i], want.tokens[i]) << "request " << i;
    ASSERT_EQ(got.logprobs[i].size(), want.logprobs[i].size()) << i;
    for (size_t t = 0; t < want.logprobs[i].size(); ++t) {
      EXPECT_NEAR(got.logprobs[i][t], want.logprobs[i][t],
                  1e-5 * std::max(1.0f, std::abs(want.logprobs[i][t])))
          << "request " << i << " token " << t;
    }
  }
}

struct Layout {
  int tp = 1;
  int pp = 1;
  int ep = 1;  // MoE experts over ep ranks of the stage (folded under tp attention)
};

class BatchInvariance : public ::testing::TestWithParam<std::tuple<const char*, Layout>> {};

TEST_P(BatchInvariance, GreedyTokensDoNotDependOnTheBatch) {
  const auto [fixture, layout] = GetParam();
  if (world().size() != layout.tp * layout.pp) GTEST_SKIP() << "for another world size";
  auto dims = parallel::resolve_dims(world().size(), layout.tp, layout.pp, 1, layout.ep, 1);
  ASSERT_TRUE(dims.ok()) << dims.status().message();
  std::unique_ptr<parallel::Mesh> mesh = parallel::Mesh::create(world(), *dims);
  const std::string dir = fixtures_dir() + "/models/" + fixture;
  auto model = models::CausalLM::from_pretrained(dir, {.mesh = mesh.get()});
  ASSERT_TRUE(model.ok()) << model.status().message();
  const std::vector<Request> requests = make_requests((*model)->config().vocab_size);

  EngineConfig roomy;  // nothing chunked, nothing preempted, no prefix cache
  roomy.num_blocks = 256;
  roomy.prefix_caching = false;
  const Served alone = serve(**model, mesh.get(), roomy, requests, /*alone=*/true);

  EngineConfig together = roomy;  // 30 at once, prefix-cache hits
  together.prefix_caching = true;
  const Served all = serve(**model, mesh.get(), together, requests, false);

  EngineConfig tight = roomy;  // prefill in pieces of at most 13 tokens, blocks of 4, preemption
  tight.block_size = 4;
  tight.num_blocks = 17;  // one 64-token request needs 16
  tight.scheduler.max_num_batched_tokens = 13;
  tight.prefix_caching = true;
  const Served squeezed = serve(**model, mesh.get(), tight, requests, false);

  EngineConfig batch_of_one = roomy;  // the static baseline, one request per step
  batch_of_one.scheduler.policy = SchedulerPolicy::kStatic;
  batch_of_one.scheduler.max_num_seqs = 5;
  const Served fixed = serve(**model, mesh.get(), batch_of_one, requests, false);

  if (world().rank() != 0) return;
  EXPECT_GT(all.stats.prefix_hit_rate, 0.0) << "the shared prefix was never reused";
  EXPECT_GT(squeezed.stats.preemptions, 0) << "the tight pool never preempted";
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_EQ(alone.tokens[i].size(), static_cast<size_t>(requests[i].max_tokens)) << i;
    EXPECT_EQ(all.tokens[i], alone.tokens[i]) << "request " << i << " among 30";
    EXPECT_EQ(squeezed.tokens[i], alone.tokens[i]) << "request " << i << " chunked + preempted";
    EXPECT_EQ(fixed.tokens[i], alone.tokens[i]) << "request " << i << " static batches";
    EXPECT_EQ(all.logprobs[i], alone.logprobs[i]) << "request " << i << " among 30";
    EXPECT_EQ(squeezed.logprobs[i], alone.logprobs[i]) << "request " << i << " chunked";
    EXPECT_EQ(fixed.logprobs[i], alone.logprobs[i]) << "request " << i << " static batches";
  }
}

TEST_P(BatchInvariance, GreedyMatchesThePyTorchReference) {
  const auto [fixture, layout] = GetParam();
  if (world().size() != layout.tp * layout.pp) GTEST_SKIP() << "for another world size";
  auto dims = parallel::resolve_dims(world().size(), layout.tp, layout.pp, 1, layout.ep, 1);
  ASSERT_TRUE(dims.ok());
  std::unique_ptr<parallel::Mesh> mesh = parallel::Mesh::create(world(), *dims);
  const std::string dir = fixtures_dir() + "/models/" + fixture;
  auto model = models::CausalLM::from_pretrained(dir, {.mesh = mesh.get()});
  ASSERT_TRUE(model.ok()) << model.status().message();
  auto ref = io::SafetensorsFile::open(dir + "/reference.safetensors");
  ASSERT_TRUE(ref.ok());
  const std::vector<int64_t> prompt = (*ref)->get("generate.prompt").value().to_ints();
  const std::vector<int64_t> want = (*ref)->get("generate.greedy").value().to_ints();
  // The reference prompt alone, and again behind other requests that share no prefix with it.
  std::vector<Request> requests = make_requests((*model)->config().vocab_size);
  requests.resize(5);
  requests.push_back({prompt, static_cast<int64_t>(want.size())});
  EngineConfig config;
  config.num_blocks = 128;
  config.block_size = 8;
  config.scheduler.max_num_batched_tokens = 16;
  const Served served = serve(**model, mesh.get(), config, requests, false);
  if (world().rank() == 0) EXPECT_EQ(served.tokens.back(), want);
}

std::string layout_name(const ::testing::TestParamInfo<BatchInvariance::ParamType>& info) {
  const auto& [fixture, layout] = info.param;
  return std::string(fixture) + "_tp" + std::to_string(layout.tp) + "_pp" +
         std::to_string(layout.pp) + (layout.ep > 1 ? "_ep" + std::to_string(layout.ep) : "");
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, BatchInvariance,
    ::testing::Combine(::testing::Values("llama_gqa", "qwen2_tied", "mixtral_moe"),
                       ::testing::Values(Layout{1, 1}, Layout{2, 1}, Layout{1, 2})),
    layout_name);

// Expert parallelism in serving: attention over tp 2, the experts dispatched over ep 2.
INSTANTIATE_TEST_SUITE_P(ExpertParallel, BatchInvariance,
                         ::testing::Combine(::testing::Values("mixtral_moe"),
                                            ::testing::Values(Layout{2, 1, 2})),
                         layout_name);

// A vocabulary tp does not divide (97 ids over tp 2, padded to 98: docs/algorithms.md "Tensor
// parallelism"): the tp-2 engine serves what a one-rank engine serves, token for token and with
// the same log-probabilities. With kPaddingWouldWin every real logit is negative, so a padded id
// that had a logit would win every argmax.
TEST(Engine, VocabularyTpDoesNotDivideServesAsOneRank) {
  if (world().size() != 2) GTEST_SKIP() << "tp 2 against one rank";
  auto dims = parallel::resolve_dims(2, 2, 1, 1, 1, 1);
  ASSERT_TRUE(dims.ok());
  std::unique_ptr<parallel::Mesh> mesh = parallel::Mesh::create(world(), *dims);
  std::unique_ptr<comm::Communicator> alone = world().split(world().rank(), 0, "alone");
  std::vector<Request> requests = make_requests(testing::kOddVocab);
  requests.resize(12);
  EngineConfig config;
  config.num_blocks = 64;
  config.block_size = 8;
  config.scheduler.max_num_batched_tokens = 24;  // prefill in pieces
  for (bool adversarial : {false, true}) {
    SCOPED_TRACE(adversarial ? "padding would win" : "random weights");
    const io::ModelConfig model_config = testing::odd_vocab_config(/*tied=*/!adversarial);
    const auto weights =
        testing::odd_vocab_weights(model_config,
                                   adversarial ? testing::OddVocabWeights::kPaddingWouldWin
                                               : testing::OddVocabWeights::kRandom,
                                   9);
    auto one = testing::model_with_weights(model_config, weights);
    const Served want = serve(*one, nullptr, config, requests, false, *alone);
    auto tp = testing::model_with_weights(model_config, weights, {.mesh = mesh.get()});
    const Served got = serve(*tp, mesh.get(), config, requests, false);
    if (world().rank() != 0) continue;
    expect_served_alike(got, want, requests);
  }
}

// tp over the whole world, and each rank alone (for the one-rank engine to compare with).
struct WorldTp {
  std::unique_ptr<parallel::Mesh> mesh;
  std::unique_ptr<comm::Communicator> alone;
};
WorldTp world_tp() {
  auto dims = parallel::resolve_dims(world().size(), world().size(), 1, 1, 1, 1);
  WEFT_CHECK(dims.ok()) << dims.status().message();
  return {parallel::Mesh::create(world(), *dims), world().split(world().rank(), 0, "alone")};
}

// Shift parallelism (docs/serving.md "Shift parallelism"): tensor-parallel steps on the tp model,
// sequence-parallel steps (Ulysses over the same ranks, full weights) on another, one KV cache.
// Forced to either mode, switching with the step size (every prefill chunk above 8 tokens in SP
// mode, the decodes in TP mode), and within one request alone: the one-rank engine's tokens,
// and its log-probabilities within 1e-5.
TEST(ShiftParallel, EveryModeServesAsOneRank) {
  const int p = world().size();
  if (p == 1) GTEST_SKIP() << "needs 2 or more ranks";
  const WorldTp w = world_tp();
  const std::unique_ptr<parallel::Mesh>& mesh = w.mesh;
  const std::unique_ptr<comm::Communicator>& alone = w.alone;
  for (const char* fixture : {"llama_gqa", "qwen2_tied", "mixtral_moe"}) {
    const std::string dir = fixtures_dir() + "/models/" + fixture;
    auto full = models::CausalLM::from_pretrained(dir);
    ASSERT_TRUE(full.ok()) << full.status().message();
    if ((*full)->config().num_key_value_heads % p != 0) continue;
    SCOPED_TRACE(fixture);
    auto tp = models::CausalLM::from_pretrained(dir, {.mesh = mesh.get()});
    ASSERT_TRUE(tp.ok()) << tp.status().message();
    std::vector<Request> requests = make_requests((*full)->config().vocab_size);
    EngineConfig config;
    config.num_blocks = 128;
    config.block_size = 8;
    config.scheduler.max_num_batched_tokens = 24;  // prefill in pieces
    const Served want = serve(**full, nullptr, config, requests, false, *alone);
    for (int64_t threshold : {int64_t{-1}, int64_t{0}, int64_t{8}}) {
      SCOPED_TRACE(threshold);
      config.shift_threshold = threshold;
      const Served got = serve(**tp, mesh.get(), config, requests, false, world(), full->get());
      // One request alone: its prefill in SP mode, its decodes in TP mode.
      config.shift_threshold = 1;
      const std::vector<Request> one = {requests[3]};
      const Served single = serve(**tp, mesh.get(), config, one, false, world(), full->get());
      if (world().rank() != 0) continue;
      if (threshold < 0) EXPECT_EQ(got.stats.sequence_parallel_steps, 0);
      if (threshold == 0) EXPECT_GT(got.stats.sequence_parallel_steps, got.stats.steps / 2);
      if (threshold == 8) {
        EXPECT_GT(got.stats.sequence_parallel_steps, 0);
        EXPECT_LT(got.stats.sequence_parallel_steps, got.stats.steps);
      }
      EXPECT_GT(single.stats.sequence_parallel_steps, 0);                   // the prefill chunks
      EXPECT_LT(single.stats.sequence_parallel_steps, single.stats.steps);  // the decodes
      EXPECT_EQ(single.tokens[0], want.tokens[3]);
      expect_served_alike(got, want, requests);
    }
  }
}

// TokenWeave (docs/serving.md "TokenWeave"): every step in two halves with reduce-scatter, the
// residual and norms on this rank's rows, and all-gather, the collectives overlapping the other
// half's compute. 30 requests (prefill chunks cut between the halves, decodes) at tp 2 and 4:
// the one-rank engine's tokens, and its log-probabilities within 1e-5.
TEST(TokenWeave, ServesAsOneRank) {
  const int p = world().size();
  if (p == 1) GTEST_SKIP() << "needs 2 or more ranks";
  const WorldTp w = world_tp();
  const std::unique_ptr<parallel::Mesh>& mesh = w.mesh;
  const std::unique_ptr<comm::Communicator>& alone = w.alone;
  for (const char* fixture : {"llama_gqa", "qwen2_tied", "mixtral_moe"}) {
    const std::string dir = fixtures_dir() + "/models/" + fixture;
    auto weave = models::CausalLM::from_pretrained(dir, {.mesh = mesh.get(), .token_weave = true});
    if (!weave.ok()) {  // qwen2_tied's 6 heads over 4 ranks
      ASSERT_NE(std::string(weave.status().message()).find("does not divide"), std::string::npos)
          << weave.status().message();
      continue;
    }
    SCOPED_TRACE(fixture);
    auto one = models::CausalLM::from_pretrained(dir);
    ASSERT_TRUE(one.ok()) << one.status().message();
    std::vector<Request> requests = make_requests((*one)->config().vocab_size);
    EngineConfig config;
    config.num_blocks = 128;
    config.block_size = 8;
    config.scheduler.max_num_batched_tokens = 23;  // odd chunks: padding in both halves
    const Served want = serve(**one, nullptr, config, requests, false, *alone);
    const Served got = serve(**weave, mesh.get(), config, requests, false);
    if (world().rank() != 0) continue;
    expect_served_alike(got, want, requests);
  }
}

TEST(Engine, RefusesModelsWithLinearAttention) {
  auto model = models::CausalLM::from_pretrained(fixtures_dir() + "/models/hybrid_linear");
  ASSERT_TRUE(model.ok());
  if (world().size() != 1) GTEST_SKIP();
  EngineConfig config;
  config.num_blocks = 16;
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::create(**model, world(), nullptr, config);
  ASSERT_FALSE(engine.ok());
  EXPECT_NE(engine.status().message().find("linear-attention"), std::string::npos)
      << engine.status().message();
}

TEST(Engine, ChecksRequests) {
  if (world().size() != 1) GTEST_SKIP();
  auto model = models::CausalLM::from_pretrained(fixtures_dir() + "/models/llama_gqa");
  ASSERT_TRUE(model.ok());
  EngineConfig config;
  config.num_blocks = 16;
  auto engine = Engine::create(**model, world(), nullptr, config);
  ASSERT_TRUE(engine.ok()) << engine.status().message();
  GenerationParams p;
  p.max_tokens = 4;
  EXPECT_EQ((*engine)->check({}, p)->param, "prompt");
  EXPECT_EQ((*engine)->check({1, 96}, p)->param, "prompt");  // vocab 96
  p.max_tokens = 62;
  EXPECT_EQ((*engine)->check({1, 2, 3}, p)->param, "max_tokens");  // 65 > 64 positions
  p.max_tokens = 4;
  p.top_p = 0;
  EXPECT_EQ((*engine)->check({1}, p)->param, "top_p");
  p.top_p = 1;
  p.temperature = -1;
  EXPECT_EQ((*engine)->check({1}, p)->param, "temperature");
  p.temperature = 0;
  EXPECT_FALSE((*engine)->check({1, 2}, p).has_value());
  // Too small a pool for one full-length request is refused at start.
  config.num_blocks = 3;  // 48 < 64 tokens
  auto small = Engine::create(**model, world(), nullptr, config);
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.status().message().find("--num-kv-blocks"), std::string::npos);
}

TEST(Engine, StopConditionsAndSeededSampling) {
  if (world().size() != 1) GTEST_SKIP();
  auto model = models::CausalLM::from_pretrained(fixtures_dir() + "/models/llama_gqa");
  ASSERT_TRUE(model.ok());
  EngineConfig config;
  config.num_blocks = 64;
  auto run = [&](GenerationParams p, std::vector<int64_t> eos) {
    config.eos_ids = eos;
    auto engine = Engine::create(**model, world(), nullptr, config);
    WEFT_CHECK(engine.ok());
    std::vector<int64_t> got;
    std::string reason;
    WEFT_CHECK((*engine)
                   ->submit({1, 2, 3}, p,
                            [&](const RequestUpdate& u) {
                              for (const GeneratedToken& t : u.tokens) got.push_back(t.id);
                              if (u.finished) reason = u.finish_reason;
                            })
                   .ok());
    (*engine)->run_until_done();
    return std::make_pair(got, reason);
  };
  GenerationParams greedy;
  greedy.max_tokens = 8;
  greedy.temperature = 0;
  const auto [all, length] = run(greedy, {});
  ASSERT_EQ(all.size(), 8u);
  EXPECT_EQ(length, "length");
  // The third token as EOS: generation stops there with "stop" (the EOS is reported, once).
  const auto [cut, stop] = run(greedy, {all[2]});
  const size_t first = std::find(all.begin(), all.end(), all[2]) - all.begin();
  EXPECT_EQ(cut, std::vector<int64_t>(all.begin(), all.begin() + first + 1));
  EXPECT_EQ(stop, "stop");
  GenerationParams ignoring = greedy;
  ignoring.ignore_eos = true;
  EXPECT_EQ(run(ignoring, {all[2]}).first, all);
  GenerationParams by_id = greedy;
  by_id.stop_token_ids = {all[2]};
  EXPECT_EQ(run(by_id, {}).first, cut);
  // Seeded sampling is reproducible; different seeds differ (over 16 tokens of a 96-way draw).
  GenerationParams sampled;
  sampled.max_tokens = 16;
  sampled.temperature = 1.5f;
  sampled.seed = 11;
  const auto a = run(sampled, {}).first;
  EXPECT_EQ(a, run(sampled, {}).first);
  sampled.seed = 12;
  EXPECT_NE(a, run(sampled, {}).first);
  // top_k = 1 is greedy whatever the temperature.
  sampled.top_k = 1;
  GenerationParams greedy16 = greedy;
  greedy16.max_tokens = 16;
  EXPECT_EQ(run(sampled, {}).first, run(greedy16, {}).first);
}

}  // namespace
}  // namespace weft::serve
