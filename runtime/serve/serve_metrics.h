// /metrics of `weft serve`: the engine's counters in the Prometheus text format (running and
// waiting requests, KV blocks, prefix-cache hit rate, tokens, TTFT/TPOT histograms).
#pragma once

#include <string>

#include "runtime/serve/engine.h"

namespace weft::serve {

std::string prometheus_metrics(const EngineStats& stats);

}  // namespace weft::serve
