#include "comm/activity.h"

#include <cstdlib>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace weft::comm {
namespace {

thread_local bool idle_scope = false;

struct Pollers {
  std::mutex mu;  // held while pollers run, so remove_poller waits for a poll in progress
  int64_t next = 1;
  std::map<int64_t, ActivityPoller> list;
};
Pollers& pollers() {
  static auto* p = new Pollers();
  return *p;
}

}  // namespace

Activity& Activity::get() {
  static Activity* activity = new Activity();  // never destroyed: comm threads may outlive main
  return *activity;
}

int64_t Activity::begin(OpRecord r) {
  r.since = ActivityClock::now();
  std::lock_guard<std::mutex> lock(mu_);
  if (r.peer >= 0 && lost_.contains(r.peer)) r.idle_ok = true;
  const int64_t token = next_++;
  running_.emplace(token, std::move(r));
  return token;
}

void Activity::set_peer_lost(int rank) {
  std::lock_guard<std::mutex> lock(mu_);
  lost_.insert(rank);
  for (auto& [token, r] : running_) {
    if (r.peer == rank) r.idle_ok = true;
  }
}

void Activity::end(int64_t token) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = running_.find(token);
  if (it == running_.end()) return;
  last_done_ = std::move(it->second);
  last_done_at_ = ActivityClock::now();
  running_.erase(it);
}

Activity::Snapshot Activity::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  Snapshot s;
  // The oldest wait that is not idle; an idle one only when there is nothing else (a posted
  // receive for the next message must not hide a stuck collective behind it).
  for (const auto& [token, r] : running_) {
    const bool better = !s.oldest || (s.oldest->idle_ok && !r.idle_ok) ||
                        (s.oldest->idle_ok == r.idle_ok && r.since < s.oldest->since);
    if (better) s.oldest = r;
  }
  s.last_done = last_done_;
  s.last_done_at = last_done_at_;
  return s;
}

IdleWaitScope::IdleWaitScope() : previous_(idle_scope) { idle_scope = true; }
IdleWaitScope::~IdleWaitScope() { idle_scope = previous_; }
bool IdleWaitScope::active() { return idle_scope; }

int64_t add_poller(ActivityPoller poller) {
  Pollers& p = pollers();
  std::lock_guard<std::mutex> lock(p.mu);
  const int64_t id = p.next++;
  p.list.emplace(id, std::move(poller));
  return id;
}

void remove_poller(int64_t id) {
  Pollers& p = pollers();
  std::lock_guard<std::mutex> lock(p.mu);
  p.list.erase(id);
}

std::string poll_all() {
  Pollers& p = pollers();
  std::lock_guard<std::mutex> lock(p.mu);
  for (auto& [id, poller] : p.list) {
    std::string error = poller();
    if (!error.empty()) return error;
  }
  return "";
}

std::string format_ranks(const std::vector<int>& ranks) {
  std::ostringstream out;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    if (i > 0) out << ',';
    out << ranks[i];
    if (j > i) out << '-' << ranks[j];
    i = j + 1;
  }
  return out.str();
}

std::vector<int> parse_ranks(const std::string& text) {
  std::vector<int> out;
  if (text.empty()) return out;
  for (const absl::string_view part : absl::StrSplit(text, ',')) {
    const std::vector<absl::string_view> ends = absl::StrSplit(part, '-');
    int lo = 0, hi = 0;
    if (ends.empty() || ends.size() > 2 || !absl::SimpleAtoi(ends[0], &lo)) return {};
    hi = lo;
    if (ends.size() == 2 && !absl::SimpleAtoi(ends[1], &hi)) return {};
    for (int r = lo; r <= hi; ++r) out.push_back(r);
  }
  return out;
}

}  // namespace weft::comm
