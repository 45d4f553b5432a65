// Pipeline schedules: small cases written out by hand, then properties over many shapes
// (each (micro-batch, chunk) forwarded and backwarded once, backward after forward, the 1F1B
// memory bound) and a simulation of all ranks together that proves the order deadlock-free.
// Then the executor's send/receive plan (pipeline_p2p_plan.h), simulated under the MPI backend's
// in-order completion rule.
#include "runtime/train/pipeline_schedule.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "runtime/train/pipeline_p2p_plan.h"

namespace weft::train {
namespace {

std::string schedule_of(int pp, int rank, int v, int m, bool forward_only = false) {
  auto actions = pipeline_schedule({.pp = pp,
                                    .pp_rank = rank,
                                    .virtual_chunks = v,
                                    .micro_batches = m,
                                    .forward_only = forward_only});
  EXPECT_TRUE(actions.ok()) << actions.status();
  return actions.ok() ? schedule_str(*actions, v > 1) : "";
}

TEST(PipelineSchedule, OneFOneBTwoStagesFourMicroBatches) {
  EXPECT_EQ(schedule_of(2, 0, 1, 4), "F0 F1 B0 F2 B1 F3 B2 B3");
  EXPECT_EQ(schedule_of(2, 1, 1, 4), "F0 B0 F1 B1 F2 B2 F3 B3");
}

TEST(PipelineSchedule, OneFOneBFourStagesWarmsUpByStage) {
  EXPECT_EQ(schedule_of(4, 0, 1, 6), "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5");
  EXPECT_EQ(schedule_of(4, 1, 1, 6), "F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 B4 B5");
  EXPECT_EQ(schedule_of(4, 3, 1, 6), "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5");
}

TEST(PipelineSchedule, OneFOneBFewerMicroBatchesThanStagesIsAllForwardThenBackward) {
  EXPECT_EQ(schedule_of(4, 0, 1, 2), "F0 F1 B0 B1");
  EXPECT_EQ(schedule_of(4, 3, 1, 2), "F0 B0 F1 B1");
}

TEST(PipelineSchedule, OneRankIsGradientAccumulation) {
  EXPECT_EQ(schedule_of(1, 0, 1, 3), "F0 B0 F1 B1 F2 B2");
}

// Megatron's order: forward k runs micro-batch (k/4)*2 + k%2 on chunk (k/2)%2, backward k the
// same micro-batch on chunk 1 - (k/2)%2. Warm-up: rank 0 2*1 + 1*2 = 4, rank 1 0 + 2 = 2.
TEST(PipelineSchedule, InterleavedTwoStagesTwoChunksFourMicroBatches) {
  EXPECT_EQ(schedule_of(2, 0, 2, 4),
            "F0.0 F1.0 F0.1 F1.1 F2.0 B0.1 F3.0 B1.1 F2.1 B0.0 F3.1 B1.0 B2.1 B3.1 B2.0 B3.0");
  EXPECT_EQ(schedule_of(2, 1, 2, 4),
            "F0.0 F1.0 F0.1 B0.1 F1.1 B1.1 F2.0 B0.0 F3.0 B1.0 F2.1 B2.1 F3.1 B3.1 B2.0 B3.0");
}

TEST(PipelineSchedule, InterleavedWithAsManyMicroBatchesAsStagesWarmsUpFully) {
  EXPECT_EQ(schedule_of(2, 1, 2, 2), "F0.0 F1.0 F0.1 F1.1 B0.1 B1.1 B0.0 B1.0");
}

TEST(PipelineSchedule, ForwardOnlyRunsEveryForwardInOrder) {
  EXPECT_EQ(schedule_of(2, 0, 1, 3, true), "F0 F1 F2");
  EXPECT_EQ(schedule_of(2, 1, 2, 4, true), "F0.0 F1.0 F0.1 F1.1 F2.0 F3.0 F2.1 F3.1");
}

TEST(PipelineSchedule, InterleavedNeedsMicroBatchesMultipleOfPp) {
  auto bad = pipeline_schedule({.pp = 4, .pp_rank = 0, .virtual_chunks = 2, .micro_batches = 6});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("--micro-batches 6 is not a multiple of --pp 4"),
            std::string::npos)
      << bad.status();
  // 1F1B has no such need.
  EXPECT_TRUE(pipeline_schedule({.pp = 4, .pp_rank = 0, .micro_batches = 6}).ok());
}

TEST(PipelineSchedule, RejectsBadShapesWithTheValue) {
  struct Case {
    ScheduleShape shape;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {{.pp = 0}, "--pp 0"},
           {{.pp = 2, .pp_rank = 2}, "pipeline rank 2 is outside [0, 2)"},
           {{.pp = 2, .virtual_chunks = 0}, "--pp-virtual 0"},
           {{.pp = 2, .micro_batches = 0}, "--micro-batches 0"},
           {{.pp = 1, .virtual_chunks = 2, .micro_batches = 2}, "--pp-virtual 2 needs --pp > 1"},
       }) {
    auto result = pipeline_schedule(c.shape);
    ASSERT_FALSE(result.ok()) << c.message;
    EXPECT_NE(result.status().message().find(c.message), std::string::npos) << result.status();
  }
}

// ---- properties over many shapes -------------------------------------------------------------

struct Shape3 {
  int pp, v, m;
};

std::vector<Shape3> all_shapes() {
  std::vector<Shape3> shapes;
  for (int pp = 1; pp <= 4; ++pp) {
    for (int v = 1; v <= (pp == 1 ? 1 : 3); ++v) {
      for (int m = 1; m <= 12; ++m) {
        if (v == 1 || m % pp == 0) shapes.push_back({pp, v, m});
      }
    }
  }
  return shapes;
}

std::vector<std::vector<PipelineAction>> schedules_of_all_ranks(const Shape3& s) {
  std::vector<std::vector<PipelineAction>> ranks;
  for (int r = 0; r < s.pp; ++r) {
    auto actions =
        pipeline_schedule({.pp = s.pp, .pp_rank = r, .virtual_chunks = s.v, .micro_batches = s.m});
    EXPECT_TRUE(actions.ok()) << actions.status();
    ranks.push_back(actions.ok() ? *actions : std::vector<PipelineAction>{});
  }
  return ranks;
}

TEST(PipelineSchedule, EveryChunkRunsEachMicroBatchForwardThenBackwardOnce) {
  for (const Shape3& s : all_shapes()) {
    const auto ranks = schedules_of_all_ranks(s);
    for (int r = 0; r < s.pp; ++r) {
      SCOPED_TRACE(::testing::Message() << "pp=" << s.pp << " v=" << s.v << " m=" << s.m
                                        << " rank=" << r << ": " << schedule_str(ranks[r], true));
      std::map<std::pair<int, int>, int> forwards, backwards;
      int in_flight = 0, most_in_flight = 0;
      for (const PipelineAction& a : ranks[r]) {
        const std::pair<int, int> key{a.micro_batch, a.chunk};
        ASSERT_TRUE(a.micro_batch >= 0 && a.micro_batch < s.m && a.chunk >= 0 && a.chunk < s.v);
        if (a.is_forward()) {
          ++forwards[key];
          most_in_flight = std::max(most_in_flight, ++in_flight);
        } else {
          EXPECT_EQ(forwards[key], 1) << "backward before forward: " << action_str(a, true);
          ++backwards[key];
          --in_flight;
        }
      }
      EXPECT_EQ(forwards.size(), static_cast<size_t>(s.m * s.v));
      EXPECT_EQ(backwards.size(), static_cast<size_t>(s.m * s.v));
      for (const auto& [key, n] : forwards) EXPECT_EQ(n, 1);
      for (const auto& [key, n] : backwards) EXPECT_EQ(n, 1);
      if (s.v == 1) {
        EXPECT_LE(most_in_flight, s.pp - r);  // the 1F1B memory bound
      }
    }
  }
}

// Runs every rank's list with unbounded send buffers: an action runs once the action it receives
// from has run (forward of stage s after forward of s-1; backward of s after backward of s+1,
// and the last stage's backward after its own forward). Returns the actions left unrun.
int simulate_unrun_actions(const Shape3& s, const std::vector<std::vector<PipelineAction>>& ranks) {
  const int stages = s.pp * s.v;
  std::vector<std::vector<bool>> forward_done(s.m, std::vector<bool>(stages, false));
  std::vector<std::vector<bool>> backward_done = forward_done;
  std::vector<size_t> next(s.pp, 0);
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < s.pp; ++r) {
      while (next[r] < ranks[r].size()) {
        const PipelineAction& a = ranks[r][next[r]];
        const int st = a.chunk * s.pp + r;
        const bool ready = a.is_forward()
                               ? (st == 0 || forward_done[a.micro_batch][st - 1])
                               : (st == stages - 1 ? forward_done[a.micro_batch][st]
                                                   : backward_done[a.micro_batch][st + 1]);
        if (!ready) break;
        (a.is_forward() ? forward_done : backward_done)[a.micro_batch][st] = true;
        ++next[r];
        progress = true;
      }
    }
  }
  int unrun = 0;
  for (int r = 0; r < s.pp; ++r) unrun += static_cast<int>(ranks[r].size() - next[r]);
  return unrun;
}

TEST(PipelineSchedule, AllRanksTogetherNeverDeadlock) {
  for (const Shape3& s : all_shapes()) {
    EXPECT_EQ(simulate_unrun_actions(s, schedules_of_all_ranks(s)), 0)
        << "pp=" << s.pp << " v=" << s.v << " m=" << s.m;
  }
}

// The simulation can fail: a rank 1 that backwards before its peer has sent the gradient.
TEST(PipelineSchedule, SimulationCatchesAWrongOrder) {
  const Shape3 s{2, 1, 2};
  auto ranks = schedules_of_all_ranks(s);
  using Kind = PipelineAction::Kind;
  ranks[0] = {{Kind::kForward, 0, 0},
              {Kind::kBackward, 0, 0},
              {Kind::kForward, 1, 0},
              {Kind::kBackward, 1, 0}};
  ranks[1] = {{Kind::kForward, 1, 0},
              {Kind::kBackward, 1, 0},
              {Kind::kForward, 0, 0},
              {Kind::kBackward, 0, 0}};
  EXPECT_GT(simulate_unrun_actions(s, ranks), 0);
}

// ---- the executor's send/receive order --------------------------------------------------------

// Runs every rank's P2PPlan together under the MPI backend's rules: a posted send is matched as
// soon as its receive is posted (and the other way round; no eager buffering assumed), but a
// rank's works on the communicator are marked done in submission order, so waiting on a receive
// also waits for every send and receive posted before it. Returns the ops left unrun plus the
// sends never matched.
int simulate_unrun_p2p_ops(const Shape3& s, int window) {
  using Kind = P2POp::Kind;
  using Message = std::tuple<bool, int, int>;  // (gradient?, micro-batch, receiving stage)
  struct Posted {
    bool is_send;
    Message message;
  };
  std::vector<P2PPlan> plans;
  std::vector<ScheduleShape> shapes;
  for (int r = 0; r < s.pp; ++r) {
    shapes.push_back({.pp = s.pp, .pp_rank = r, .virtual_chunks = s.v, .micro_batches = s.m});
    auto plan = pipeline_p2p_plan(shapes.back(), window);
    EXPECT_TRUE(plan.ok()) << plan.status();
    plans.push_back(plan.ok() ? *plan : P2PPlan{});
  }
  std::set<Message> sends_posted, recvs_posted;
  std::vector<std::vector<Posted>> queues(s.pp);
  std::vector<size_t> next(s.pp, 0);
  auto complete = [&](const Posted& p) {
    return p.is_send ? recvs_posted.count(p.message) > 0 : sends_posted.count(p.message) > 0;
  };
  // Done when it and everything posted before it on the rank are complete.
  auto done = [&](int r, const Message& m) {
    for (const Posted& p : queues[r]) {
      if (!complete(p)) return false;
      if (!p.is_send && p.message == m) return true;
    }
    return false;
  };
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < s.pp; ++r) {
      for (; next[r] < plans[r].ops.size(); ++next[r], progress = true) {
        const P2POp& op = plans[r].ops[next[r]];
        const PipelineAction& a = plans[r].actions[op.action];
        const ActionPeers peers = action_peers(shapes[r], a);
        const int stage = a.chunk * s.pp + r;
        const Message in{!a.is_forward(), a.micro_batch, stage};
        const Message out{!a.is_forward(), a.micro_batch, peers.to_stage};
        if (op.kind == Kind::kPostRecv) {
          queues[r].push_back({false, in});
          recvs_posted.insert(in);
        } else if (op.kind == Kind::kPostSend) {
          queues[r].push_back({true, out});
          sends_posted.insert(out);
        } else if (op.kind == Kind::kWaitRecv && !done(r, in)) {
          break;
        }
      }
    }
  }
  int unrun = 0;
  for (int r = 0; r < s.pp; ++r) {
    unrun += static_cast<int>(plans[r].ops.size() - next[r]);
    for (const Posted& p : queues[r]) unrun += complete(p) ? 0 : 1;
  }
  return unrun;
}

TEST(PipelineP2PPlan, EveryRankTogetherNeverDeadlocksWithAWindowOfOneOrMore) {
  for (int window : {1, 2, 3, 8, 1000}) {
    for (const Shape3& s : all_shapes()) {
      EXPECT_EQ(simulate_unrun_p2p_ops(s, window), 0)
          << "window=" << window << " pp=" << s.pp << " v=" << s.v << " m=" << s.m;
    }
  }
}

// Posting each receive only just before its wait is not enough for the interleaved schedule: the
// simulation finds the deadlock (so it can fail), which is why the executor looks further ahead.
TEST(PipelineP2PPlan, ReceivesPostedOnlyAtTheirWaitDeadlockInterleaved) {
  EXPECT_GT(simulate_unrun_p2p_ops({2, 2, 4}, 0), 0);
  EXPECT_EQ(simulate_unrun_p2p_ops({2, 1, 4}, 0), 0);
}

TEST(PipelineP2PPlan, PostsEachReceiveOnceBeforeItsWaitWithinTheWindow) {
  using Kind = P2POp::Kind;
  for (int window : {0, 2}) {
    for (const Shape3& s : all_shapes()) {
      for (int r = 0; r < s.pp; ++r) {
        const ScheduleShape shape{
            .pp = s.pp, .pp_rank = r, .virtual_chunks = s.v, .micro_batches = s.m};
        auto plan = pipeline_p2p_plan(shape, window);
        ASSERT_TRUE(plan.ok()) << plan.status();
        std::map<int, int> posted, waited, runs, sent;
        int outstanding = 0;
        for (const P2POp& op : plan->ops) {
          const ActionPeers peers = action_peers(shape, plan->actions[op.action]);
          switch (op.kind) {
            case Kind::kPostRecv:
              EXPECT_TRUE(peers.receives);
              ++posted[op.action];
              EXPECT_LE(++outstanding, window + 1);  // receive buffers alive at once
              break;
            case Kind::kWaitRecv:
              EXPECT_EQ(posted[op.action], 1);
              ++waited[op.action];
              --outstanding;
              break;
            case Kind::kRun:
              EXPECT_EQ(waited[op.action], peers.receives ? 1 : 0);
              ++runs[op.action];
              break;
            case Kind::kPostSend:
              EXPECT_EQ(runs[op.action], 1);
              EXPECT_TRUE(peers.sends);
              ++sent[op.action];
              break;
          }
        }
        for (size_t i = 0; i < plan->actions.size(); ++i) {
          const ActionPeers peers = action_peers(shape, plan->actions[i]);
          EXPECT_EQ(runs[i], 1);
          EXPECT_EQ(waited[i], peers.receives ? 1 : 0);
          EXPECT_EQ(sent[i], peers.sends ? 1 : 0);
        }
      }
    }
  }
}

}  // namespace
}  // namespace weft::train
