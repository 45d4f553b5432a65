// weft-mpi-ranks: 2 3 4
// Sequence-parallel softmax attention (parallel/sp_attention.h): every algorithm, under every
// layout it accepts, gives each rank exactly its rows of the one-rank causal attention over the
// whole sequence (o, dq, dk, dv), and moves the bytes docs/algorithms.md says it moves; the cost
// model predicts those bytes, and auto runs the candidate the model ranks first (ring when
// transfers hide behind compute, the fewest bytes when bytes are expensive) with the same result.
#include "parallel/sp_attention.h"

#include <gtest/gtest.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "comm/mpi_communicator.h"
#include "kernels/ops.h"
#include "parallel/sp_auto.h"
#include "parallel/sp_cost_model.h"
#include "tests/support/test_util.h"

namespace weft::parallel {
namespace {

constexpr int64_t kBatch = 2, kSeq = 24, kDim = 8;  // kSeq: a multiple of 2P and P for P <= 4
constexpr int64_t kF32 = 4;

struct Case {
  SpAttnAlgo algo = SpAttnAlgo::kRing;
  int groups = 1;  // layout groups
  int ulysses = 1;
  int64_t heads = 4, kv_heads = 2;
};

std::string describe(const Case& c) {
  return absl::StrCat(sp_attn_name(c.algo), " groups=", c.groups, " ulysses=", c.ulysses,
                      " H=", c.heads, " Hkv=", c.kv_heads);
}

SpAttentionOptions options_for(const Case& c, int ranks) {
  SpAttentionOptions o;
  o.algo = c.algo;
  o.layout = SpLayout{ranks, c.groups};
  o.ulysses = c.ulysses;
  o.scale = 1.0f / std::sqrt(static_cast<float>(kDim));
  o.heads = c.heads;
  o.kv_heads = c.kv_heads;
  return o;
}

// full [B, T, h, d] -> [B, positions, h, d].
Tensor take_rows(const Tensor& full, const std::vector<int64_t>& positions) {
  const int64_t b = full.dim(0), t = full.dim(1), row = full.dim(2) * full.dim(3);
  const int64_t c = static_cast<int64_t>(positions.size());
  Tensor out = Tensor::empty({b, c, full.dim(2), full.dim(3)});
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < c; ++j) {
      const float* src = full.data<float>() + (i * t + positions[j]) * row;
      std::copy(src, src + row, out.data<float>() + (i * c + j) * row);
    }
  }
  return out;
}

// The same random full-sequence tensors on every rank, and the one-rank results.
struct Reference {
  Tensor q, k, v, dout, o, dq, dk, dv;
};

Reference reference(int64_t heads, int64_t kv_heads, float scale) {
  Reference r;
  r.q = testing::random_tensor({kBatch, kSeq, heads, kDim}, 11);
  r.k = testing::random_tensor({kBatch, kSeq, kv_heads, kDim}, 12);
  r.v = testing::random_tensor({kBatch, kSeq, kv_heads, kDim}, 13);
  r.dout = testing::random_tensor({kBatch, kSeq, heads, kDim}, 14);
  r.o = Tensor::empty(r.q.shape());
  Tensor lse = Tensor::empty({kBatch, heads, kSeq});
  kernels::attention_forward(r.q, r.k, r.v, scale, true, 0, 0, r.o, lse);
  r.dq = Tensor::zeros(r.q.shape());
  r.dk = Tensor::zeros(r.k.shape());
  r.dv = Tensor::zeros(r.v.shape());
  kernels::attention_backward(r.q, r.k, r.v, r.o, lse, r.dout, scale, true, 0, 0, r.dq, r.dk, r.dv);
  return r;
}

// Runs forward and backward of `attn` (made for `c`) on this rank's rows and compares with the
// reference rows.
void expect_core_matches_single_rank(comm::Communicator& sp, const Case& c,
                                     SequenceParallelAttention& attn) {
  SCOPED_TRACE(describe(c));
  const SpAttentionOptions opts = options_for(c, sp.size());
  const Reference ref = reference(c.heads, c.kv_heads, opts.scale);
  const std::vector<int64_t> pos = opts.layout.positions(kSeq, sp.rank());
  std::unique_ptr<SpAttentionSaved> saved;
  const Tensor o =
      attn.forward(take_rows(ref.q, pos), take_rows(ref.k, pos), take_rows(ref.v, pos), &saved);
  ASSERT_NE(saved, nullptr);
  // Without a saved state the forward computes the same output.
  EXPECT_TENSORS_CLOSE(
      attn.forward(take_rows(ref.q, pos), take_rows(ref.k, pos), take_rows(ref.v, pos), nullptr), o,
      0.0);
  // Pre-filled with garbage: backward must overwrite, not add.
  Tensor dq = Tensor::full({kBatch, kSeq / sp.size(), c.heads, kDim}, 5.0f);
  Tensor dk = Tensor::full({kBatch, kSeq / sp.size(), c.kv_heads, kDim}, 5.0f);
  Tensor dv = Tensor::full({kBatch, kSeq / sp.size(), c.kv_heads, kDim}, 5.0f);
  attn.backward(*saved, take_rows(ref.dout, pos), dq, dk, dv);
  EXPECT_TENSORS_CLOSE(o, take_rows(ref.o, pos), 1e-4);
  EXPECT_TENSORS_CLOSE(dq, take_rows(ref.dq, pos), 1e-4);
  EXPECT_TENSORS_CLOSE(dk, take_rows(ref.dk, pos), 1e-4);
  EXPECT_TENSORS_CLOSE(dv, take_rows(ref.dv, pos), 1e-4);
}

void expect_matches_single_rank(comm::Communicator& sp, const Case& c) {
  auto attn = make_sp_attention(sp, options_for(c, sp.size()));
  ASSERT_TRUE(attn.ok()) << describe(c) << ": " << attn.status();
  expect_core_matches_single_rank(sp, c, **attn);
}

// One forward (and optionally backward) of `attn` (made for `c`) with reset counters; returns
// the group's stats.
std::map<std::string, comm::CallStats> traffic(comm::Communicator& sp, const Case& c,
                                               SequenceParallelAttention& attn,
                                               bool with_backward) {
  const int64_t n = kSeq / sp.size();
  const Tensor q = testing::random_tensor({kBatch, n, c.heads, kDim}, 21 + sp.rank());
  const Tensor k = testing::random_tensor({kBatch, n, c.kv_heads, kDim}, 31 + sp.rank());
  sp.barrier();
  sp.reset_stats();
  std::unique_ptr<SpAttentionSaved> saved;
  const Tensor o = attn.forward(q, k, k, &saved);
  if (with_backward) {
    Tensor dq, dk, dv;
    attn.backward(*saved, o, dq, dk, dv);
  }
  return sp.stats();
}

std::map<std::string, comm::CallStats> traffic(comm::Communicator& sp, const Case& c,
                                               bool with_backward) {
  auto attn = make_sp_attention(sp, options_for(c, sp.size()));
  EXPECT_TRUE(attn.ok()) << attn.status();
  return traffic(sp, c, **attn, with_backward);
}

std::vector<int> divisors(int p) {
  std::vector<int> out;
  for (int g = 1; g <= p; ++g) {
    if (p % g == 0) out.push_back(g);
  }
  return out;
}

TEST(SpAttention, NamesRoundTripAndUnknownNameIsAnError) {
  for (SpAttnAlgo algo : {SpAttnAlgo::kRing, SpAttnAlgo::kUlysses, SpAttnAlgo::kUsp,
                          SpAttnAlgo::kAllGather, SpAttnAlgo::kAuto}) {
    auto parsed = parse_sp_attn(sp_attn_name(algo));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, algo);
  }
  const auto bad = parse_sp_attn("zigzag");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("zigzag"), std::string::npos) << bad.status();
}

TEST(SpAttention, PreferredLayoutIsZigzagAtTheRingLevel) {
  EXPECT_EQ(preferred_layout(SpAttnAlgo::kRing, 4, 1).groups, 4);
  EXPECT_EQ(preferred_layout(SpAttnAlgo::kAuto, 4, 1).groups, 4);
  EXPECT_EQ(preferred_layout(SpAttnAlgo::kUsp, 4, 2).groups, 2);
  EXPECT_EQ(preferred_layout(SpAttnAlgo::kUsp, 6, 3).groups, 2);
  EXPECT_EQ(preferred_layout(SpAttnAlgo::kUlysses, 4, 1).groups, 1);
  EXPECT_EQ(preferred_layout(SpAttnAlgo::kAllGather, 4, 1).groups, 1);
  EXPECT_EQ(preferred_layout(SpAttnAlgo::kRing, 3, 1).ranks, 3);
}

TEST(SpAttention, RejectsOptionsItCannotRun) {
  auto sp = comm::mpi_world_communicator("sp");
  const int p = sp->size();
  auto error = [&](SpAttentionOptions o, const std::string& needle) {
    SCOPED_TRACE(needle);
    auto made = make_sp_attention(*sp, o);
    ASSERT_FALSE(made.ok());
    EXPECT_NE(made.status().message().find(needle), std::string::npos) << made.status();
  };
  SpAttentionOptions o = options_for(Case{}, p);
  o.layout.ranks = p + 1;
  o.layout.groups = 1;
  error(o, absl::StrCat("has ", p));
  o = options_for(Case{SpAttnAlgo::kUsp, 1, p + 1}, p);
  error(o, absl::StrCat("--sp-ulysses ", p + 1));
  // usp with ulysses = P has one ring group: a zigzag over P groups does not match it.
  o = options_for(Case{SpAttnAlgo::kUsp, p, p}, p);
  error(o, absl::StrCat("zigzag over ", p));
  if (p == 4) {
    o = options_for(Case{SpAttnAlgo::kRing, 2}, p);
    error(o, "zigzag over 2");
  }
  o = options_for(Case{SpAttnAlgo::kUlysses, 1, 1, 1, 1}, p);
  error(o, "1 query heads");
  o = options_for(Case{SpAttnAlgo::kAllGather, 1, 1, 4, 3}, p);
  error(o, "kv heads 3");
  // The options every algorithm accepts are accepted.
  for (SpAttnAlgo algo : {SpAttnAlgo::kRing, SpAttnAlgo::kUlysses, SpAttnAlgo::kAllGather}) {
    EXPECT_TRUE(make_sp_attention(*sp, options_for(Case{algo, 1}, p)).ok());
  }
}

TEST(RingAttention, ZigzagMatchesSingleRank) {
  auto sp = comm::mpi_world_communicator("sp");
  for (auto [h, hkv] : {std::pair{4, 2}, std::pair{3, 3}, std::pair{4, 1}}) {
    expect_matches_single_rank(*sp, Case{SpAttnAlgo::kRing, sp->size(), 1, h, hkv});
  }
}

TEST(RingAttention, ContiguousMatchesSingleRank) {
  auto sp = comm::mpi_world_communicator("sp");
  for (auto [h, hkv] : {std::pair{4, 2}, std::pair{3, 3}}) {
    expect_matches_single_rank(*sp, Case{SpAttnAlgo::kRing, 1, 1, h, hkv});
  }
}

TEST(RingAttention, SendsPMinusOneKvBlocksForwardAndAccumulatorsHomeBackward) {
  auto sp = comm::mpi_world_communicator("sp");
  const int64_t p = sp->size(), c = kSeq / p, hkv = 2;
  const int64_t block = 2 * kBatch * c * hkv * kDim * kF32;  // K and V of one rank
  const Case ring{SpAttnAlgo::kRing, static_cast<int>(p), 1, 4, hkv};
  auto fwd = traffic(*sp, ring, false);
  EXPECT_EQ(fwd["send"].calls, p - 1);
  EXPECT_EQ(fwd["send"].bytes_sent, (p - 1) * block);
  EXPECT_EQ(comm::total(fwd).bytes_sent, (p - 1) * block);  // nothing but the ring sends
  // Backward: the K/V blocks again (P-1) and the dK/dV accumulators (P hops, home included).
  auto both = traffic(*sp, ring, true);
  EXPECT_EQ(both["send"].calls, (p - 1) + (p - 1) + p);
  EXPECT_EQ(both["send"].bytes_sent, (p - 1 + p - 1 + p) * block);
}

TEST(UlyssesAttention, MatchesSingleRankUnderEveryLayout) {
  auto sp = comm::mpi_world_communicator("sp");
  const int p = sp->size();
  for (int g : divisors(p)) {
    // GQA (with P > Hkv at P = 3, 4: replicated KV heads), MHA.
    expect_matches_single_rank(*sp, Case{SpAttnAlgo::kUlysses, g, p, 4, 2});
    expect_matches_single_rank(*sp, Case{SpAttnAlgo::kUlysses, g, p, 4, 4});
  }
}

TEST(UlyssesAttention, UnevenHeadsMatchSingleRank) {
  auto sp = comm::mpi_world_communicator("sp");
  // H=10, Hkv=2 at P=3, 4: a rank's query heads straddle two KV heads unevenly (expanded).
  for (auto [h, hkv] : {std::pair{5, 5}, std::pair{6, 1}, std::pair{10, 2}, std::pair{6, 3}}) {
    expect_matches_single_rank(*sp, Case{SpAttnAlgo::kUlysses, 1, sp->size(), h, hkv});
  }
}

TEST(UlyssesAttention, AllToAllMovesPMinusOneOverPOfEachTensor) {
  auto sp = comm::mpi_world_communicator("sp");
  const int64_t p = sp->size(), c = kSeq / p, h = 12;  // 12 heads: divisible by 2, 3, 4
  const int64_t local = kBatch * c * h * kDim * kF32;  // q, k, v or o of this rank (MHA)
  auto fwd = traffic(*sp, Case{SpAttnAlgo::kUlysses, 1, static_cast<int>(p), h, h}, false);
  // q in, k and v in (one call), o back.
  EXPECT_EQ(fwd["all_to_all_v"].calls, 3);
  EXPECT_EQ(fwd["all_to_all_v"].bytes_sent, (p - 1) * (4 * local) / p);
  EXPECT_EQ(comm::total(fwd).bytes_sent, fwd["all_to_all_v"].bytes_sent);
}

TEST(UlyssesAttention, ReplicatedKvHeadsAreSentToEveryRankThatReadsThem) {
  auto sp = comm::mpi_world_communicator("sp");
  const int64_t p = sp->size(), c = kSeq / p;
  // H = 4, Hkv = 1: every rank gets q heads by the even split and the one KV head.
  const int64_t q_row = kBatch * c * kDim * kF32;  // one head of this rank's tokens
  int64_t q_sent = 0;
  for (int64_t j = 0; j < p; ++j) {
    if (j != sp->rank()) q_sent += (4 / p + (j < 4 % p ? 1 : 0)) * q_row;
  }
  const int64_t my_heads = 4 / p + (sp->rank() < 4 % p ? 1 : 0);
  const int64_t kv_sent = (p - 1) * 2 * q_row;        // K and V of the KV head, to each
  const int64_t o_sent = (p - 1) * my_heads * q_row;  // my heads of the others' tokens
  auto fwd = traffic(*sp, Case{SpAttnAlgo::kUlysses, 1, static_cast<int>(p), 4, 1}, false);
  EXPECT_EQ(fwd["all_to_all_v"].bytes_sent, q_sent + kv_sent + o_sent);
}

TEST(UspAttention, MatchesSingleRankForEveryUlyssesSize) {
  auto sp = comm::mpi_world_communicator("sp");
  const int p = sp->size();
  for (int a : divisors(p)) {
    // Zigzag at the ring level, and contiguous (the same when there is one ring group).
    for (int g : p / a == 1 ? std::vector<int>{1} : std::vector<int>{p / a, 1}) {
      expect_matches_single_rank(*sp, Case{SpAttnAlgo::kUsp, g, a, 4, 2});
      expect_matches_single_rank(*sp, Case{SpAttnAlgo::kUsp, g, a, 6, 6});
    }
  }
}

TEST(AllGatherAttention, MatchesSingleRankUnderEveryLayout) {
  auto sp = comm::mpi_world_communicator("sp");
  for (int g : divisors(sp->size())) {
    expect_matches_single_rank(*sp, Case{SpAttnAlgo::kAllGather, g, 1, 4, 2});
    expect_matches_single_rank(*sp, Case{SpAttnAlgo::kAllGather, g, 1, 3, 3});
  }
}

TEST(AllGatherAttention, GathersKvOnceAndReduceScattersItsGradients) {
  auto sp = comm::mpi_world_communicator("sp");
  const int64_t p = sp->size(), hkv = 2;
  const int64_t full = 2 * kBatch * kSeq * hkv * kDim * kF32;  // K and V of the whole sequence
  const Case ag{SpAttnAlgo::kAllGather, 1, 1, 4, hkv};
  auto both = traffic(*sp, ag, true);
  EXPECT_EQ(both["all_gather"].calls, 1);
  EXPECT_EQ(both["all_gather"].bytes_sent, (p - 1) * full / p);
  EXPECT_EQ(both["reduce_scatter"].calls, 1);
  EXPECT_EQ(both["reduce_scatter"].bytes_sent, (p - 1) * full / p);
  EXPECT_EQ(comm::total(both).bytes_sent, 2 * (p - 1) * full / p);
}

// ---- auto (parallel/sp_auto.h) and its cost model (parallel/sp_cost_model.h) -----------------

// The group's mean over ranks of `value` (so that every rank asserts the same number).
double mean_over_ranks(comm::Communicator& sp, double value) {
  Tensor t = Tensor::from_floats({static_cast<float>(value)}, {1});
  sp.all_reduce(t);
  return t.to_floats()[0] / sp.size();
}

SpAttnShape shape_of(const Case& c, int ranks) {
  return {.batch = kBatch,
          .tokens = kSeq / ranks,
          .heads = c.heads,
          .kv_heads = c.kv_heads,
          .dim = kDim,
          .ranks = ranks,
          .elem_bytes = kF32};
}

std::unique_ptr<AutoSpAttention> make_auto(comm::Communicator& sp, const Case& c,
                                           const SpCostParams& costs) {
  auto made = make_auto_sp_attention(sp, options_for(c, sp.size()), costs);
  EXPECT_TRUE(made.ok()) << made.status();
  return made.ok() ? std::move(*made) : nullptr;
}

// The call kinds `algo` issues (ring: send; ulysses: all_to_all_v; allgather: all_gather and
// reduce_scatter); no two algorithms share one.
std::vector<std::string> calls_of(SpAttnAlgo algo) {
  switch (algo) {
    case SpAttnAlgo::kUlysses:
      return {"all_to_all_v"};
    case SpAttnAlgo::kAllGather:
      return {"all_gather", "reduce_scatter"};
    default:
      return {"send"};
  }
}

// Forward + backward of `attn` ran `algo` (and only it) and matched the one-rank result.
void expect_ran(comm::Communicator& sp, const Case& c, AutoSpAttention& attn, SpAttnAlgo algo) {
  SCOPED_TRACE(sp_attn_name(algo));
  auto stats = traffic(sp, c, attn, true);
  EXPECT_EQ(attn.last_choice(), algo);
  int64_t bytes = 0;
  for (const std::string& kind : calls_of(algo)) {
    EXPECT_GT(stats[kind].calls, 0) << kind;
    bytes += stats[kind].bytes_sent;
  }
  EXPECT_EQ(bytes, comm::total(stats).bytes_sent);
  expect_core_matches_single_rank(sp, c, attn);
}

// Every algorithm's predicted bytes per rank (forward + backward) equal the traffic counters'
// mean over the ranks, so the model's byte term is docs/algorithms.md's volume, not a guess.
TEST(SpCostModel, PredictedBytesEqualTheCounters) {
  auto sp = comm::mpi_world_communicator("sp");
  const int p = sp->size();
  std::vector<Case> cases;
  for (auto [h, hkv] : {std::pair{4, 2}, std::pair{6, 3}, std::pair{4, 1}}) {
    cases.push_back({SpAttnAlgo::kRing, p, 1, h, hkv});
    cases.push_back({SpAttnAlgo::kRing, 1, 1, h, hkv});
    cases.push_back({SpAttnAlgo::kUlysses, 1, p, h, hkv});
    cases.push_back({SpAttnAlgo::kAllGather, p, 1, h, hkv});
  }
  // usp with 1 < a < P moves its bytes on split communicators, which the group's counters do not
  // see: its a = 1 and a = P forms (the ring and Ulysses above) stand for it.
  for (const Case& c : cases) {
    SCOPED_TRACE(describe(c));
    const double measured =
        mean_over_ranks(*sp, static_cast<double>(comm::total(traffic(*sp, c, true)).bytes_sent));
    const SpCost predicted = predict_sp_attention(c.algo, shape_of(c, p), SpLayout{p, c.groups},
                                                  c.ulysses, SpCostParams{});
    EXPECT_NEAR(predicted.bytes, measured, 1e-6 * measured + 1e-9);
  }
}

TEST(AutoAttention, MatchesSingleRankWithMeasuredCosts) {
  auto sp = comm::mpi_world_communicator("sp");
  for (int groups : {sp->size(), 1}) {
    for (auto [h, hkv] : {std::pair{4, 2}, std::pair{3, 3}}) {
      expect_matches_single_rank(*sp, Case{SpAttnAlgo::kAuto, groups, 1, h, hkv});
    }
  }
}

// Bytes almost free against compute: every ring transfer hides behind a step's attention, and
// ring pays only its dK/dV hops (P blocks) against the all-gather's 2(P-1) blocks and Ulysses'
// all-to-alls: ring (at P = 2 it ties with allgather and wins the tie as the leaner in memory).
TEST(AutoAttention, PicksRingWhenItsTransfersHideBehindCompute) {
  auto sp = comm::mpi_world_communicator("sp");
  const Case c{SpAttnAlgo::kAuto, sp->size(), 1, 4, 2};
  auto attn = make_auto(*sp, c, SpCostParams{.alpha = 0, .beta = 1e-12, .gamma = 1e-9});
  ASSERT_NE(attn, nullptr);
  EXPECT_EQ(attn->choose(kBatch, kSeq / sp->size(), kDim, kF32), SpAttnAlgo::kRing);
  expect_ran(*sp, c, *attn, SpAttnAlgo::kRing);
}

// Bytes expensive against compute: the candidate that sends the fewest bytes, never ring (whose
// K/V blocks travel twice and its gradients once).
TEST(AutoAttention, PicksTheFewestBytesWhenBytesAreExpensive) {
  auto sp = comm::mpi_world_communicator("sp");
  const int p = sp->size();
  for (auto [h, hkv] : {std::pair{4, 2}, std::pair{4, 4}}) {
    const Case c{SpAttnAlgo::kAuto, p, 1, h, hkv};
    const SpCostParams costs{.alpha = 0, .beta = 1e-3, .gamma = 1e-15};
    auto attn = make_auto(*sp, c, costs);
    ASSERT_NE(attn, nullptr);
    SpAttnAlgo fewest = SpAttnAlgo::kRing;
    double fewest_bytes = 0;
    for (SpAttnAlgo algo : attn->candidates()) {
      const double b = predict_sp_attention(algo, shape_of(c, p), SpLayout{p, p}, 1, costs).bytes;
      if (algo == SpAttnAlgo::kRing || b < fewest_bytes) fewest = algo, fewest_bytes = b;
    }
    EXPECT_NE(fewest, SpAttnAlgo::kRing);
    EXPECT_EQ(attn->choose(kBatch, kSeq / p, kDim, kF32), fewest);
    expect_ran(*sp, c, *attn, fewest);
  }
}

// With fewer query heads than ranks Ulysses is no candidate; the rest still choose and match.
TEST(AutoAttention, LeavesOutUlyssesWhenHeadsAreFewerThanRanks) {
  auto sp = comm::mpi_world_communicator("sp");
  const Case c{SpAttnAlgo::kAuto, sp->size(), 1, 1, 1};
  auto attn = make_auto(*sp, c, SpCostParams{.alpha = 0, .beta = 1e-3, .gamma = 1e-15});
  ASSERT_NE(attn, nullptr);
  EXPECT_EQ(attn->candidates(), (std::vector{SpAttnAlgo::kRing, SpAttnAlgo::kAllGather}));
  expect_ran(*sp, c, *attn, SpAttnAlgo::kAllGather);
}

// WEFT_SP_COST overrides the probe; ranks that disagree end with the maximum (the same choice
// everywhere); a malformed value is an error on every rank; the probe measures positive costs.
TEST(SpCostModel, CalibrationIsAgreedAndOverriddenByTheEnvironment) {
  auto sp = comm::mpi_world_communicator("sp");
  const double alpha = 1e-6 * (1 + sp->rank());
  setenv("WEFT_SP_COST", absl::StrCat(alpha, ",2e-9,3e-11").c_str(), 1);
  auto env = calibrate_sp_cost(*sp);
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_NEAR(env->alpha, 1e-6 * sp->size(), 1e-12);
  EXPECT_NEAR(env->beta, 2e-9, 1e-15);
  EXPECT_NEAR(env->gamma, 3e-11, 1e-17);
  setenv("WEFT_SP_COST", "1e-6,fast", 1);
  auto bad = calibrate_sp_cost(*sp);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("1e-6,fast"), std::string::npos) << bad.status();
  unsetenv("WEFT_SP_COST");
  auto probed = calibrate_sp_cost(*sp);
  ASSERT_TRUE(probed.ok()) << probed.status();
  EXPECT_GT(probed->alpha, 0);
  EXPECT_GT(probed->beta, 0);
  EXPECT_GT(probed->gamma, 0);
  // The same on every rank: the largest and the smallest over the ranks are equal.
  Tensor spread =
      Tensor::from_floats({static_cast<float>(probed->alpha), -static_cast<float>(probed->alpha),
                           static_cast<float>(probed->gamma), -static_cast<float>(probed->gamma)},
                          {4});
  sp->all_reduce(spread, comm::ReduceOp::kMax);
  const std::vector<float> v = spread.to_floats();
  EXPECT_EQ(v[0], -v[1]);
  EXPECT_EQ(v[2], -v[3]);
}

}  // namespace
}  // namespace weft::parallel
