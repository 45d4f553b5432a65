#include "comm/traffic.h"

#include "runtime/core/check.h"

namespace weft::comm {

int64_t bus_bytes(const std::string& kind, int64_t bytes, int group_size) {
  const int64_t p = group_size;
  if (kind == "all_reduce") return 2 * (p - 1) * bytes / p;
  if (kind == "all_gather" || kind == "reduce_scatter" || kind == "all_to_all") {
    return (p - 1) * bytes / p;
  }
  if (kind == "barrier" || kind == "recv") return 0;
  return bytes;  // all_to_all_v, send, broadcast, all_scan: the bytes given
}

void TrafficCounters::record(const std::string& kind, int64_t bytes, int group_size) {
  WEFT_CHECK(group_size > 0) << kind;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    CallStats& s = stats_[kind];
    s.calls += 1;
    s.bytes_sent += bus_bytes(kind, bytes, group_size);
  }
  if (parent_ != nullptr) parent_->record(kind, bytes, group_size);
}

std::map<std::string, CallStats> TrafficCounters::snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void TrafficCounters::reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.clear();
}

CallStats total(const std::map<std::string, CallStats>& stats) {
  CallStats sum;
  for (const auto& [kind, s] : stats) {
    sum.calls += s.calls;
    sum.bytes_sent += s.bytes_sent;
  }
  return sum;
}

}  // namespace weft::comm
