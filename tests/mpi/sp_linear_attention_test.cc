// weft-mpi-ranks: 2 3 4
// Sequence-parallel decayed linear attention (parallel/sp_linear_attention.h): LASP-2 and ZeCO
// give every rank exactly its rows of the one-rank kernel over the whole sequence (o, dq, dk,
// dv) on every layout they accept, with GQA and without; their traffic per pass is the formula
// of docs/algorithms.md whatever the sequence length (LASP-2: (P-1) states per rank per run slot,
// ZeCO: one state per rank per pass, none on the last rank of the pass) and the cost model's
// bytes; ZeCO refuses layouts other than contiguous and the zigzag over ranks; auto runs LASP-2
// when latency dominates and ZeCO when bytes do, with the same result.
#include "parallel/sp_linear_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "comm/mpi_communicator.h"
#include "kernels/ops.h"
#include "parallel/sp_auto.h"
#include "parallel/sp_cost_model.h"
#include "tests/support/test_util.h"

namespace weft::parallel {
namespace {

using testing::random_tensor;

constexpr int64_t kBatch = 2, kDim = 4;

struct Heads {
  int64_t q, kv;
};

// Decays far enough from 1 that each head weighs distant ranks differently, close enough that
// states carried across several ranks still matter.
std::vector<float> decays(int64_t heads) {
  std::vector<float> g(heads);
  for (int64_t h = 0; h < heads; ++h) g[h] = 1.0f - std::pow(2.0f, -4.0f - h);
  return g;
}

// x [B, T, n, d] -> the rows at `positions` along dim 1: [B, positions.size(), n, d].
Tensor take_positions(const Tensor& x, const std::vector<int64_t>& positions) {
  const int64_t seq = x.dim(1), row = x.dim(2) * x.dim(3);
  const std::vector<float> src = x.to_floats();
  std::vector<float> dst;
  for (int64_t b = 0; b < x.dim(0); ++b) {
    for (int64_t p : positions) {
      dst.insert(dst.end(), src.begin() + (b * seq + p) * row,
                 src.begin() + (b * seq + p + 1) * row);
    }
  }
  return Tensor::from_floats(
      dst, {x.dim(0), static_cast<int64_t>(positions.size()), x.dim(2), x.dim(3)});
}

// The whole sequence on one rank and its share on this rank, forward and backward.
struct Problem {
  Tensor q, k, v, dout;  // [B, T, H or Hkv, d]
  Tensor o, dq, dk, dv;  // the one-rank results
  std::vector<float> gamma;
  float scale = 0.0f;

  Problem(int64_t seq, Heads heads, uint64_t seed)
      : q(random_tensor({kBatch, seq, heads.q, kDim}, seed, -0.5f, 0.5f)),
        k(random_tensor({kBatch, seq, heads.kv, kDim}, seed + 1, -0.5f, 0.5f)),
        v(random_tensor({kBatch, seq, heads.kv, kDim}, seed + 2, -0.5f, 0.5f)),
        dout(random_tensor({kBatch, seq, heads.q, kDim}, seed + 3, -0.5f, 0.5f)),
        o(Tensor::empty(q.shape())),
        dq(Tensor::zeros(q.shape())),
        dk(Tensor::zeros(k.shape())),
        dv(Tensor::zeros(v.shape())),
        gamma(decays(heads.q)),
        scale(1.0f / std::sqrt(static_cast<float>(kDim))) {
    Tensor m = Tensor::empty({kBatch, heads.q, kDim, kDim});
    kernels::linear_attention_forward(q, k, v, gamma, scale, Tensor(), 16, o, m);
    kernels::linear_attention_backward(q, k, v, gamma, scale, Tensor(), dout, Tensor(), 16, dq, dk,
                                       dv, m);
  }
};

struct Outcome {
  Tensor o, dq, dk, dv;               // this rank's rows
  comm::CallStats forward, backward;  // the algorithm's collective in each pass
};

// The group's mean over ranks of `value` (so that every rank asserts the same number).
double mean_over_ranks(comm::Communicator& group, double value) {
  Tensor t = Tensor::from_floats({static_cast<float>(value)}, {1});
  group.all_reduce(t);
  return t.to_floats()[0] / group.size();
}

const char* collective_of(SpLinearAlgo algo) {
  return algo == SpLinearAlgo::kLasp2 ? "all_gather" : "all_scan";
}

// Runs one forward and one backward of `sp` (made over `layout`) on this rank's rows of `problem`;
// `kind`: the only call kind it may issue.
Outcome run_core(comm::Communicator& group, SequenceParallelLinearAttention& sp,
                 const std::string& kind, const SpLayout& layout, const Problem& problem) {
  const std::vector<int64_t> mine = layout.positions(problem.q.dim(1), group.rank());
  Outcome out;
  std::unique_ptr<SpLinearSaved> saved;
  group.reset_stats();
  out.o = sp.forward(take_positions(problem.q, mine), take_positions(problem.k, mine),
                     take_positions(problem.v, mine), problem.gamma, problem.scale, &saved);
  out.forward = group.stats()[kind];
  EXPECT_EQ(comm::total(group.stats()).calls, out.forward.calls) << "only " << kind << " calls";
  out.dq = Tensor::full({kBatch, static_cast<int64_t>(mine.size()), problem.q.dim(2), kDim}, 7.0f);
  out.dk = Tensor::full({kBatch, static_cast<int64_t>(mine.size()), problem.k.dim(2), kDim}, 7.0f);
  out.dv = Tensor::full(out.dk.shape(), 7.0f);  // stale values must be overwritten
  group.reset_stats();
  sp.backward(*saved, take_positions(problem.dout, mine), out.dq, out.dk, out.dv);
  out.backward = group.stats()[kind];
  EXPECT_EQ(comm::total(group.stats()).calls, out.backward.calls) << "only " << kind << " calls";
  return out;
}

Outcome run_sp(comm::Communicator& group, SpLinearAlgo algo, const SpLayout& layout,
               const Problem& problem) {
  auto made = make_sp_linear_attention(group, {.algo = algo, .layout = layout, .scan_blocks = 3});
  EXPECT_TRUE(made.ok()) << made.status();
  return run_core(group, **made, collective_of(algo), layout, problem);
}

// o, dq, dk, dv equal the one-rank results' rows at `mine` (f32, sums over up to 576 positions).
void expect_rows_of(const Outcome& got, const Problem& problem, const std::vector<int64_t>& mine) {
  EXPECT_TENSORS_CLOSE(got.o, take_positions(problem.o, mine), 1e-4);
  EXPECT_TENSORS_CLOSE(got.dq, take_positions(problem.dq, mine), 1e-4);
  EXPECT_TENSORS_CLOSE(got.dk, take_positions(problem.dk, mine), 1e-4);
  EXPECT_TENSORS_CLOSE(got.dv, take_positions(problem.dv, mine), 1e-4);
}

struct Case {
  SpLinearAlgo algo;
  bool zigzag;  // groups = P, else contiguous
  Heads heads;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return std::string(sp_linear_name(c.algo)) + (c.zigzag ? "_zigzag" : "_contiguous") + "_h" +
         std::to_string(c.heads.q) + "_kv" + std::to_string(c.heads.kv);
}

void PrintTo(const Case& c, std::ostream* os) {
  *os << sp_linear_name(c.algo) << (c.zigzag ? " zigzag" : " contiguous") << " H=" << c.heads.q
      << " Hkv=" << c.heads.kv;
}

class SpLinearCases : public ::testing::TestWithParam<Case> {};

// Every rank's o, dq, dk, dv equal its rows of the one-rank kernel, at two sequence lengths
// (runs shorter and longer than the kernel's chunk of 64), and the bytes moved are the formula
// at both lengths.
TEST_P(SpLinearCases, MatchesSingleRankAndMovesStatesOnly) {
  const Case& c = GetParam();
  auto world = comm::mpi_world_communicator("sp");
  const int p = world->size(), rank = world->rank();
  const SpLayout layout{.ranks = p, .groups = c.zigzag ? p : 1};
  const int64_t state_bytes = kBatch * c.heads.q * kDim * kDim * 4;
  for (int64_t seq : {layout.multiple() * 3, layout.multiple() * 72}) {
    SCOPED_TRACE("seq " + std::to_string(seq));
    const Problem problem(seq, c.heads, 11 + seq);
    const Outcome got = run_sp(*world, c.algo, layout, problem);
    const std::vector<int64_t> mine = layout.positions(seq, rank);
    expect_rows_of(got, problem, mine);

    const int64_t runs = c.zigzag ? 2 : 1;
    int64_t want_calls = 1, want_bytes = 0;
    if (c.algo == SpLinearAlgo::kLasp2) {
      want_bytes = (p - 1) * runs * state_bytes;  // (P-1)/P of the P * runs gathered states
    } else {
      want_calls = runs;
      // One state per pass, except on the pass's last rank: P-1 forward (and on the contiguous
      // backward's reverse pass: rank 0), rank 0 on the zigzag's reverse second pass.
      const bool forward_last = rank == p - 1, reverse_last = rank == 0;
      const int64_t fwd_states = c.zigzag ? !forward_last + !reverse_last : !forward_last;
      const int64_t bwd_states = c.zigzag ? !forward_last + !reverse_last : !reverse_last;
      EXPECT_EQ(got.forward.bytes_sent, fwd_states * state_bytes);
      EXPECT_EQ(got.backward.bytes_sent, bwd_states * state_bytes);
    }
    EXPECT_EQ(got.forward.calls, want_calls);
    EXPECT_EQ(got.backward.calls, want_calls);
    if (c.algo == SpLinearAlgo::kLasp2) {
      EXPECT_EQ(got.forward.bytes_sent, want_bytes);
      EXPECT_EQ(got.backward.bytes_sent, want_bytes);
    }
    // The cost model's bytes are the counters' (mean over the ranks, forward + backward).
    const double measured = mean_over_ranks(
        *world, static_cast<double>(got.forward.bytes_sent + got.backward.bytes_sent));
    const SpLinearShape shape{
        .batch = kBatch, .tokens = seq / p, .heads = c.heads.q, .dim = kDim, .ranks = p};
    EXPECT_NEAR(predict_sp_linear(c.algo, shape, layout, 3, SpCostParams{}).bytes, measured,
                1e-6 * measured);
  }
}

INSTANTIATE_TEST_SUITE_P(AlgorithmsLayoutsHeads, SpLinearCases,
                         ::testing::Values(Case{SpLinearAlgo::kLasp2, false, {4, 2}},
                                           Case{SpLinearAlgo::kLasp2, true, {4, 2}},
                                           Case{SpLinearAlgo::kLasp2, false, {2, 2}},
                                           Case{SpLinearAlgo::kLasp2, true, {2, 2}},
                                           Case{SpLinearAlgo::kZeco, false, {4, 2}},
                                           Case{SpLinearAlgo::kZeco, true, {4, 2}},
                                           Case{SpLinearAlgo::kZeco, false, {2, 2}},
                                           Case{SpLinearAlgo::kZeco, true, {2, 2}}),
                         case_name);

// The layouts between contiguous and zigzag over ranks (1 < groups < P, USP's ring level): LASP-2
// still matches one rank; ZeCO refuses them, naming the layout.
TEST(SpLinearAttention, Lasp2MatchesAndZecoRefusesIntermediateZigzag) {
  auto world = comm::mpi_world_communicator("sp");
  const int p = world->size();
  int tested = 0;
  for (int groups = 2; groups < p; ++groups) {
    if (p % groups != 0) continue;
    ++tested;
    const SpLayout layout{.ranks = p, .groups = groups};
    const int64_t seq = layout.multiple() * 5;
    const Problem problem(seq, {4, 2}, 90);
    const Outcome got = run_sp(*world, SpLinearAlgo::kLasp2, layout, problem);
    const std::vector<int64_t> mine = layout.positions(seq, world->rank());
    expect_rows_of(got, problem, mine);

    auto zeco = make_sp_linear_attention(*world, {.algo = SpLinearAlgo::kZeco, .layout = layout});
    ASSERT_FALSE(zeco.ok());
    EXPECT_NE(std::string(zeco.status().message()).find("zeco"), std::string::npos)
        << zeco.status();
  }
  if (tested == 0) GTEST_SKIP() << "no layout with 1 < groups < " << p << " ranks";
}

TEST(SpLinearAttention, ParsesNamesAndRefusesAMismatchedLayout) {
  auto world = comm::mpi_world_communicator("sp");
  for (SpLinearAlgo algo : {SpLinearAlgo::kLasp2, SpLinearAlgo::kZeco, SpLinearAlgo::kAuto}) {
    auto parsed = parse_sp_linear(sp_linear_name(algo));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, algo);
  }
  EXPECT_FALSE(parse_sp_linear("ring").ok());
  const SpLayout wrong{.ranks = world->size() + 1, .groups = 1};
  EXPECT_FALSE(
      make_sp_linear_attention(*world, {.algo = SpLinearAlgo::kLasp2, .layout = wrong}).ok());
}

// ---- auto (parallel/sp_auto.h) ----------------------------------------------------------------

// Runs auto over `layout` and checks that it ran `want` (its collective only) and matched.
void expect_auto_runs(comm::Communicator& world, AutoSpLinearAttention& sp, SpLinearAlgo want,
                      const SpLayout& layout) {
  SCOPED_TRACE(std::string(sp_linear_name(want)) +
               (layout.contiguous() ? " contiguous" : " zigzag"));
  const int64_t seq = layout.multiple() * 6;
  const Problem problem(seq, {4, 2}, 70 + seq);
  EXPECT_EQ(sp.choose(kBatch, seq / world.size(), 4, kDim), want);
  const Outcome got = run_core(world, sp, collective_of(want), layout, problem);
  EXPECT_EQ(sp.last_choice(), want);
  EXPECT_GT(got.forward.calls, 0);
  expect_rows_of(got, problem, layout.positions(seq, world.rank()));
}

// Latency expensive, zigzag: LASP-2's one all-gather per pass beats ZeCO's two dependent scans.
// Bytes expensive, any layout: ZeCO's one state per rank per pass beats LASP-2's P-1 per run
// (at P = 2 they tie and ZeCO, the first candidate, wins).
TEST(AutoLinearAttention, PicksLasp2WhenLatencyDominatesAndZecoWhenBytesDo) {
  auto world = comm::mpi_world_communicator("sp");
  const int p = world->size();
  const SpLayout zigzag{p, p};
  auto latency = make_auto_sp_linear_attention(
      *world, {.algo = SpLinearAlgo::kAuto, .layout = zigzag, .scan_blocks = 3}, {.alpha = 1e-3});
  ASSERT_TRUE(latency.ok()) << latency.status();
  expect_auto_runs(*world, **latency, SpLinearAlgo::kLasp2, zigzag);
  for (const SpLayout layout : {SpLayout{p, 1}, zigzag}) {
    const SpLinearOptions options{.algo = SpLinearAlgo::kAuto, .layout = layout, .scan_blocks = 3};
    auto bytes = make_auto_sp_linear_attention(*world, options, {.beta = 1e-3});
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    expect_auto_runs(*world, **bytes, SpLinearAlgo::kZeco, layout);
  }
}

// With the probe's costs auto runs whichever it picks, with the one-rank result; on a zigzag that
// ZeCO cannot follow it has LASP-2 alone.
TEST(AutoLinearAttention, MatchesSingleRankWithMeasuredCostsOnEveryLayout) {
  auto world = comm::mpi_world_communicator("sp");
  const int p = world->size();
  for (int groups = 1; groups <= p; ++groups) {
    if (p % groups != 0) continue;
    const SpLayout layout{p, groups};
    auto made = make_sp_linear_attention(*world, {.algo = SpLinearAlgo::kAuto, .layout = layout});
    ASSERT_TRUE(made.ok()) << made.status();
    auto* sp = dynamic_cast<AutoSpLinearAttention*>(made->get());
    ASSERT_NE(sp, nullptr);
    const bool zeco_fits = groups == 1 || groups == p;
    EXPECT_EQ(sp->candidates().size(), zeco_fits ? 2u : 1u);
    const int64_t seq = layout.multiple() * 6;
    expect_auto_runs(*world, *sp, sp->choose(kBatch, seq / p, 4, kDim), layout);
  }
}

}  // namespace
}  // namespace weft::parallel
