// Wall-clock intervals for step times, waits and benchmarks.
#pragma once

#include <chrono>

namespace weft {

using SteadyClock = std::chrono::steady_clock;

// Seconds elapsed since `start`.
inline double seconds_since(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

}  // namespace weft
