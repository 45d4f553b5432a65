// kill -9 of every rank at random moments of a run that saves a checkpoint asynchronously after
// every step, 20 times over, each run resuming with --load from what the last one left. After
// each kill every complete checkpoint verifies; each run resumes from the newest complete one;
// and the stitched loss history of the 20 runs equals one uninterrupted run's, step for step
// (docs/reliability.md: a checkpoint is written under a temporary name and renamed).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/train/checkpoint_reader.h"
#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kRanks = 2;
constexpr int kKills = 20;

std::string train_args(const std::string& tokens, int64_t steps, const std::string& extra) {
  return absl::StrCat("train --model ", model_fixture("llama_gqa"), " --data ", tokens, " --steps ",
                      steps, " --global-batch 4 --seq-len 16 --lr 1e-4 ", extra);
}

// The steps of the complete checkpoints in `dir`, oldest first.
std::vector<int64_t> complete_steps(const std::string& dir) {
  std::vector<int64_t> steps;
  for (const std::string& path : train::complete_checkpoints(dir)) {
    steps.push_back(std::stoll(fs::path(path).filename().string().substr(5)));  // "step-N"
  }
  return steps;
}

bool has_save_leftover(const std::string& dir) {
  if (!fs::exists(dir)) return false;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".tmp") return true;
  }
  return false;
}

TEST(CrashLoop, TwentyKillsDuringAsyncSavesAlwaysResumeFromTheNewestCompleteCheckpoint) {
  const std::string dir = make_temp_dir("weft_crash_loop");
  const std::string tokens = write_token_file(dir, random_ids({16, 16}, 11, 96));
  const std::string ckpt = dir + "/ckpt";
  const std::string metrics = dir + "/metrics.jsonl";
  std::mt19937 rng(2026);  // fixed: the same kill moments on every run of the test
  std::uniform_int_distribution<int> delay_ms(150, 1000);
  int interrupted_saves = 0;
  int64_t newest = 0;
  std::set<int64_t> verified;
  for (int kill = 0; kill < kKills; ++kill) {
    const std::vector<int64_t> before = complete_steps(ckpt);
    const std::string load = before.empty() ? "" : " --load " + ckpt;
    const std::string err = absl::StrCat(dir, "/err", kill);
    const std::string done = absl::StrCat(dir, "/done", kill);
    const std::string cmd = absl::StrCat(
        "(timeout 300 ", WEFT_MPIRUN, " -np ", kRanks, " ", WEFT_BINARY, " ",
        train_args(tokens, 100000000,
                   "--save " + ckpt + " --save-every 1 --keep-last 3 --log-every 1000000 " +
                       "--metrics " + metrics + load),
        " >/dev/null 2>", err, "; touch ", done, ") &");
    ASSERT_EQ(std::system(cmd.c_str()), 0);
    const int wait = delay_ms(rng);
    std::this_thread::sleep_for(std::chrono::milliseconds(wait));
    // Every rank at once, then the launcher: nothing gets to clean up.
    std::system(absl::StrCat("pkill -KILL -f '^", WEFT_BINARY, " train .*", tokens, "'").c_str());
    std::system(absl::StrCat("pkill -KILL -f 'mpirun.*", tokens, "'").c_str());
    for (int i = 0; i < 600 && !fs::exists(done); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(fs::exists(done)) << "the killed run did not end";
    const std::string log = read_text(err);
    if (!before.empty()) {
      // It resumed from the newest complete checkpoint (unless it was killed before loading).
      if (log.find("resumed from ") != std::string::npos) {
        char name[32];
        std::snprintf(name, sizeof(name), "step-%08lld", static_cast<long long>(before.back()));
        EXPECT_NE(log.find(absl::StrCat("resumed from ", ckpt, "/", name, " at step ")),
                  std::string::npos)
            << "kill " << kill << ": " << log;
      }
    }
    const bool leftover = has_save_leftover(ckpt);
    interrupted_saves += leftover ? 1 : 0;
    const std::vector<int64_t> after = complete_steps(ckpt);
    int64_t last = 0;  // the newest complete checkpoint's step, 0 before the first
    for (int64_t step : after) last = std::max(last, step);
    std::printf("kill %2d after %4d ms: newest complete checkpoint step %lld%s\n", kill, wait,
                static_cast<long long>(last), leftover ? ", a save was cut short" : "");
    ASSERT_GE(last, newest) << "a complete checkpoint was lost";
    newest = last;
    // The checkpoints new since the last kill, verified at once (one process each, in
    // parallel); the shell's status is the worst of them.
    std::string verify = "status=0; pids=";
    for (int64_t step : after) {
      if (!verified.insert(step).second) continue;  // unchanged since it verified
      char name[32];
      std::snprintf(name, sizeof(name), "/step-%08lld", static_cast<long long>(step));
      absl::StrAppend(&verify, "; ", WEFT_BINARY, " ckpt verify --from ", ckpt, name, " >>", dir,
                      "/verify.log 2>&1 & pids=\"$pids $!\"");
    }
    absl::StrAppend(&verify, "; for p in $pids; do wait $p || status=1; done; exit $status");
    EXPECT_EQ(std::system(absl::StrCat("bash -c '", verify, "'").c_str()), 0)
        << "kill " << kill << ": " << read_text(dir + "/verify.log");
  }
  std::printf("%d of %d kills cut a save short; the newest checkpoint is step %lld\n",
              interrupted_saves, kKills, static_cast<long long>(newest));
  ASSERT_GT(newest, 0);
  EXPECT_GE(interrupted_saves, 1) << "no kill landed during a save: the test did not test it";

  // Two more steps from the last checkpoint; the metrics file then holds steps 1..newest+2, each
  // once, and they equal an uninterrupted run's.
  const RunResult last =
      run_weft(train_args(tokens, newest + 2, "--load " + ckpt + " --metrics " + metrics), kRanks);
  ASSERT_EQ(last.exit_code, 0) << last.err;
  const std::string straight = dir + "/straight.jsonl";
  const RunResult ref = run_weft(
      train_args(tokens, newest + 2, "--log-every 1000000 --metrics " + straight), kRanks, 600);
  ASSERT_EQ(ref.exit_code, 0) << ref.err;
  const std::vector<double> a = metric_losses(metrics);
  const std::vector<double> e = metric_losses(straight);
  ASSERT_EQ(a.size(), static_cast<size_t>(newest + 2));
  ASSERT_EQ(e.size(), a.size());
  int64_t differ = 0;
  for (size_t i = 0; i < a.size(); ++i) differ += a[i] != e[i] ? 1 : 0;
  EXPECT_EQ(differ, 0) << "steps whose loss differs from the uninterrupted run's";
}

}  // namespace
}  // namespace weft::testing
