// Per-call-kind traffic counters shared by every Communicator backend, with the byte formulas
// of communicator.h (nccl-tests bus convention). Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "comm/communicator.h"

namespace weft::comm {

// Bytes one rank sends for a call over `group_size` ranks, where `bytes` is the size named in
// communicator.h for that kind ("all_reduce": the buffer, "all_gather": the full output, ...).
// Kinds with explicit byte counts (all_to_all_v, send, all_scan) pass them through unchanged.
int64_t bus_bytes(const std::string& kind, int64_t bytes, int group_size);

class TrafficCounters {
 public:
  // `parent`: counters that every call recorded here is also recorded in (or null).
  explicit TrafficCounters(std::shared_ptr<TrafficCounters> parent = nullptr)
      : parent_(std::move(parent)) {}

  // Counts one call of `kind`, adding bus_bytes(kind, bytes, group_size), here and in the
  // parent chain.
  void record(const std::string& kind, int64_t bytes, int group_size);
  [[nodiscard]] std::map<std::string, CallStats> snapshot() const;
  void reset();

 private:
  const std::shared_ptr<TrafficCounters> parent_;
  mutable std::mutex mutex_;
  std::map<std::string, CallStats> stats_;
};

}  // namespace weft::comm
