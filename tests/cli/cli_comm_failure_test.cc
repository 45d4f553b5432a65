// A rank that dies, is stopped or hangs mid-step ends the whole job within about --comm-timeout
// seconds, with a message naming the rank and the collective (comm/health_monitor.h,
// docs/operations.md "Failure detection"). Each case trains on two ranks until the metrics show a
// few steps, injects the fault, and times how long mpirun takes to exit after it. The measured
// times are printed (and recorded in bench/RESULTS.md); the bound checked is the issue's 60 s.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

constexpr int kTimeout = 5;  // --comm-timeout of every case

struct Outcome {
  int exit_code = -1;
  double seconds = -1;  // from the fault to mpirun's exit
  std::string err;
};

// Trains the tiny Llama on two ranks (WEFT_FAULT_STALL=`stall` when not empty); once three steps
// are in the metrics, sends `signal` (when not empty) to world rank `rank`.
Outcome train_with_fault(const std::string& stall, const std::string& signal, int rank,
                         const std::string& fault_variable = "WEFT_FAULT_STALL") {
  const std::string dir = make_temp_dir("weft_comm_failure");
  {
    std::ofstream tokens(dir + "/tokens.txt");
    for (int i = 0; i < 16; ++i) {
      for (int j = 0; j < 16; ++j) tokens << (i * 7 + j * 13) % 96 << (j == 15 ? "\n" : " ");
    }
  }
  // The marker in the command line lets the script find this run's rank processes.
  const std::string script =
      absl::StrCat(R"sh(
set -u
cd ')sh",
                   dir, R"sh('
)sh",
                   stall.empty() ? "" : absl::StrCat("export ", fault_variable, "=", stall, "\n"),
                   WEFT_MPIRUN, " -np 2 ", WEFT_BINARY, " train --model ",
                   model_fixture("llama_gqa"), R"sh( --data tokens.txt \
  --steps 100000000 --global-batch 4 --seq-len 16 --log-every 1000000 --metrics metrics.jsonl \
  --comm-timeout )sh",
                   kTimeout, R"sh( >out.txt 2>err.txt &
launcher=$!
for i in $(seq 1 1200); do
  [ -f metrics.jsonl ] && [ "$(wc -l < metrics.jsonl)" -ge 3 ] && break
  kill -0 $launcher 2>/dev/null || break
  sleep 0.05
done
if [ -n ')sh",
                   signal, R"sh(' ]; then
  for p in $(pgrep -f "train --model .* --data tokens.txt"); do
    [ "$(cat /proc/$p/comm 2>/dev/null)" = weft ] || continue
    [ "$(readlink /proc/$p/cwd)" = "$PWD" ] || continue
    if tr '\0' '\n' < /proc/$p/environ | grep -qx "OMPI_COMM_WORLD_RANK=)sh",
                   rank, R"sh("; then
      kill -)sh",
                   signal, R"sh( $p
    fi
  done
fi
start=$(date +%s.%N)
while kill -0 $launcher 2>/dev/null; do
  if [ "$(echo "$(date +%s.%N) - $start > 120" | bc)" = 1 ]; then kill -9 $launcher; fi
  sleep 0.1
done
wait $launcher
rc=$?
echo "$rc $(echo "$(date +%s.%N) - $start" | bc)" > result.txt
)sh");
  std::ofstream(dir + "/run.sh") << script;
  EXPECT_EQ(std::system(absl::StrCat("bash ", dir, "/run.sh").c_str()), 0);
  Outcome o;
  std::ifstream result(dir + "/result.txt");
  result >> o.exit_code >> o.seconds;
  o.err = read_text(dir + "/err.txt");
  std::printf("fault %s%s on rank %d: exit code %d, %.2f s after the fault\n",
              stall.empty() ? "" : "stall ", signal.c_str(), rank, o.exit_code, o.seconds);
  return o;
}

TEST(CommFailure, StoppedRankIsNamedWithItsLastCollective) {
  const Outcome o = train_with_fault("", "STOP", 1);
  EXPECT_EQ(o.exit_code, 76) << o.err;
  EXPECT_GT(o.seconds, kTimeout - 1);
  EXPECT_LT(o.seconds, 60);
  EXPECT_NE(o.err.find("rank 0: comm failure: rank 1 sent no heartbeat"), std::string::npos)
      << o.err;
  EXPECT_NE(o.err.find("its last report: "), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("all_reduce #"), std::string::npos) << o.err;
}

TEST(CommFailure, StoppedRankZeroIsNamedByTheOthers) {
  const Outcome o = train_with_fault("", "STOP", 0);
  EXPECT_EQ(o.exit_code, 76) << o.err;
  EXPECT_LT(o.seconds, 60);
  EXPECT_NE(o.err.find("rank 1: comm failure: rank 0 (which watches the other ranks) sent no "
                       "heartbeat"),
            std::string::npos)
      << o.err;
}

// Alive (heartbeats flow) but never reaching the next collective: the waiting rank names it.
TEST(CommFailure, StalledRankIsNamedAsNotInTheCollective) {
  const Outcome o = train_with_fault("1:5", "", 1);
  EXPECT_EQ(o.exit_code, 76) << o.err;
  EXPECT_LT(o.seconds, 60);
  EXPECT_NE(o.err.find("WEFT_FAULT_STALL: stalling at step 5"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("rank 0: comm failure: rank 0 has waited"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("not in it: rank 1 is computing for"), std::string::npos) << o.err;
}

// A rank that returns an error the others never see (they wait for it in their next collective):
// the job ends within seconds with that rank's exit code, not after the timeout with 76.
TEST(CommFailure, ARankFailingAloneEndsTheJobWithItsExitCode) {
  const Outcome o = train_with_fault("1:5", "", 1, "WEFT_FAULT_FAIL");
  EXPECT_EQ(o.exit_code, 1) << o.err;
  EXPECT_LT(o.seconds, 60);
  EXPECT_NE(o.err.find("WEFT_FAULT_FAIL: rank 1 fails alone at step 5"), std::string::npos)
      << o.err;
  EXPECT_NE(o.err.find("a rank failed alone: rank 1 ended with exit code 1 while the others went "
                       "on (rank 0 is in "),
            std::string::npos)
      << o.err;
}

// mpirun ends the job when a rank exits on a signal; it names the rank.
TEST(CommFailure, KilledRankEndsTheJob) {
  const Outcome o = train_with_fault("", "KILL", 1);
  EXPECT_NE(o.exit_code, 0) << o.err;
  EXPECT_LT(o.seconds, 60);
  EXPECT_NE(o.err.find("rank 1"), std::string::npos) << o.err;
}

TEST(CommFailure, NegativeTimeoutIsRefused) {
  const RunResult r = run_weft(absl::StrCat("train --model ", model_fixture("llama_gqa"),
                                            " --init-random --data x --comm-timeout -1"),
                               2);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(
      r.err.find(
          "--comm-timeout (or WEFT_COMM_TIMEOUT) must be 0 (off) or a number of seconds >= 1"),
      std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace weft::testing
