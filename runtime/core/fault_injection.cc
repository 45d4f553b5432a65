#include "runtime/core/fault_injection.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"

namespace weft {
namespace {

struct Stall {
  int rank = -1;
  long long step = -1;
};

Stall read_stall(const char* variable) {
  Stall s;
  const char* env = std::getenv(variable);
  if (env == nullptr || std::sscanf(env, "%d:%lld", &s.rank, &s.step) != 2) return Stall{};
  return s;
}

}  // namespace

void maybe_stall(int world_rank, int64_t step) {
  static const Stall stall = read_stall("WEFT_FAULT_STALL");
  if (stall.rank != world_rank || stall.step != step) return;
  std::fprintf(stderr, "weft: rank %d: WEFT_FAULT_STALL: stalling at step %lld\n", world_rank,
               static_cast<long long>(step));
  std::fflush(stderr);
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}

absl::Status maybe_fail(int world_rank, int64_t step) {
  static const Stall fault = read_stall("WEFT_FAULT_FAIL");
  if (fault.rank != world_rank || fault.step != step) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat("WEFT_FAULT_FAIL: rank ", world_rank, " fails alone at step ", step));
}

}  // namespace weft
