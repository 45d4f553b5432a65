#include "comm/health_monitor.h"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "comm/activity.h"
#include "comm/mpi_check.h"
#include "runtime/core/check.h"

namespace weft::comm {
namespace {

// kProbe: rank 0 asks for a beat at once (HealthMonitor::unresponsive_ranks). kLost: rank 0
// says that rank `peer` is written off; kDismiss: ... and that this rank cannot go on without it.
enum BeatType : int32_t {
  kAlive = 0,
  kFinished = 1,
  kRelease = 2,
  kAck = 3,
  kProbe = 4,
  kLost = 5,
  kDismiss = 6
};

// One heartbeat, sent as bytes (every rank runs the same binary).
struct Beat {
  int32_t rank = 0;
  int32_t type = kAlive;
  int32_t exit_code = 0;
  int32_t busy = 0;         // an operation is in progress (the fields below describe it)
  int32_t idle_ok = 0;      // ... and it is an idle wait
  int32_t peer = -1;        // point-to-point: the other side's world rank
  int32_t members_cut = 0;  // `members` did not fit: the group cannot be listed
  int32_t probe = 0;        // kProbe: its number; a beat: the probe it answers (0: none)
  int64_t seq = 0;
  double age_s = 0;  // busy: how long in it; otherwise how long since the last op completed
  char kind[32] = {};
  char comm[32] = {};
  char members[400] = {};
};

constexpr int kTag = 1;

void copy_field(char* dst, size_t size, const std::string& src) {
  std::snprintf(dst, size, "%s", src.c_str());
}

double seconds(ActivityClock::duration d) { return std::chrono::duration<double>(d).count(); }

// The operation `b` describes: "all_reduce #57 on 'tp' (ranks 0-3)".
std::string op_text(const Beat& b) {
  if (b.peer >= 0) {
    return absl::StrFormat("%s %s rank %d on '%s' (ranks %s)", b.kind,
                           std::strcmp(b.kind, "send") == 0 ? "to" : "from", b.peer, b.comm,
                           b.members);
  }
  return absl::StrFormat("%s #%d on '%s' (ranks %s)", b.kind, b.seq, b.comm, b.members);
}

// What `b` says its rank is doing, in words.
std::string describe(const Beat& b) {
  if (b.type == kFinished) return absl::StrFormat("finished (exit code %d)", b.exit_code);
  if (b.busy) {
    return absl::StrFormat("in %s for %.1f s%s", op_text(b), b.age_s,
                           b.idle_ok ? " (waiting for work)" : "");
  }
  if (b.kind[0] == '\0')
    return absl::StrFormat("computing for %.1f s (no collective yet)", b.age_s);
  return absl::StrFormat("computing for %.1f s since %s", b.age_s, op_text(b));
}

bool same_op(const Beat& a, const Beat& b) {
  return a.busy && b.busy && a.type != kFinished && b.type != kFinished && a.seq == b.seq &&
         std::strcmp(a.kind, b.kind) == 0 && std::strcmp(a.comm, b.comm) == 0 &&
         std::strcmp(a.members, b.members) == 0;
}

}  // namespace

class HealthMonitor::Impl {
 public:
  Impl(MPI_Comm comm, double timeout_s, std::function<int()> pending_signal)
      : comm_(comm), timeout_s_(timeout_s), pending_signal_(std::move(pending_signal)) {
    WEFT_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    WEFT_MPI_CHECK(MPI_Comm_size(comm_, &size_));
    interval_s_ = std::clamp(timeout_s / 8, 0.05, 2.0);
    const ActivityClock::time_point now = ActivityClock::now();
    last_seen_.assign(size_, now);
    beats_.resize(size_);
    acked_.assign(size_, false);
    lost_.assign(size_, false);
    for (int r = 0; r < size_; ++r) beats_[r].rank = r;
    thread_ = std::thread([this] { loop(); });
  }

  ~Impl() {
    finish(0);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  void finish(int exit_code) {
    if (!thread_.joinable()) return;
    exit_code_.store(exit_code);
    finished_.store(true);
    thread_.join();
  }

  std::vector<int> unresponsive_ranks(double wait_s) {
    if (rank_ != 0) return {};
    std::unique_lock<std::mutex> lock(probe_mu_);
    ++probe_;
    probe_asked_ = true;
    answered_.assign(size_, false);
    answered_[rank_] = true;
    for (int r : lost_ranks()) answered_[r] = true;
    probe_cv_.wait_for(lock, std::chrono::duration<double>(wait_s), [&] {
      return std::all_of(answered_.begin(), answered_.end(), [](bool a) { return a; });
    });
    std::vector<int> silent;
    for (int r = 0; r < size_; ++r) {
      if (!answered_[r]) silent.push_back(r);
    }
    return silent;
  }

  void set_failure_hook(std::function<void(const std::string&)> hook) {
    std::lock_guard<std::mutex> lock(probe_mu_);
    failure_hook_ = std::move(hook);
  }

  // Once it returns, a handler being replaced has finished, and the ranks it wrote off are
  // marked lost.
  void set_loss_handler(std::function<std::vector<int>(int, const std::string&)> handler) {
    std::lock_guard<std::mutex> lock(handler_mu_);
    loss_handler_ = std::move(handler);
  }

  std::vector<int> lost_ranks() const {
    std::lock_guard<std::mutex> lock(lost_mu_);
    std::vector<int> out;
    for (int r = 0; r < size_; ++r) {
      if (lost_[r]) out.push_back(r);
    }
    return out;
  }

  bool is_lost(int r) const { return lost(r); }

 private:
  // This rank's beat, from comm/activity.h.
  Beat own_beat() const {
    Beat b;
    b.rank = rank_;
    b.type = finished_.load() ? kFinished : kAlive;
    b.exit_code = exit_code_.load();
    const Activity::Snapshot s = Activity::get().snapshot();
    const ActivityClock::time_point now = ActivityClock::now();
    const OpRecord* r = nullptr;
    if (s.oldest) {
      r = &*s.oldest;
      b.busy = 1;
      b.idle_ok = r->idle_ok ? 1 : 0;
      b.age_s = seconds(now - r->since);
    } else {
      if (s.last_done) r = &*s.last_done;
      b.age_s = seconds(now - s.last_done_at);
    }
    if (r != nullptr) {
      copy_field(b.kind, sizeof(b.kind), r->kind);
      copy_field(b.comm, sizeof(b.comm), r->comm);
      copy_field(b.members, sizeof(b.members), r->members);
      b.members_cut = r->members.size() >= sizeof(b.members) ? 1 : 0;
      b.seq = r->seq;
      b.peer = r->peer;
    }
    return b;
  }

  bool lost(int r) const {
    std::lock_guard<std::mutex> lock(lost_mu_);
    return lost_[r];
  }

  // Rank r is written off: no beat goes to it again, and operations with it count as idle waits.
  void mark_lost(int r) {
    {
      std::lock_guard<std::mutex> lock(lost_mu_);
      lost_[r] = true;
    }
    Activity::get().set_peer_lost(r);
  }

  void send(int dst, Beat b) {
    if (lost(dst)) return;
    auto& s = sends_.emplace_back(Send{std::make_unique<Beat>(b), MPI_REQUEST_NULL, dst});
    WEFT_MPI_CHECK(MPI_Isend(s.beat.get(), sizeof(Beat), MPI_BYTE, dst, kTag, comm_, &s.request));
  }

  // Frees the beats that have gone, and gives up on those to written-off ranks (MPI may still
  // read such a buffer: it stays allocated, a few hundred bytes per lost rank).
  void reap_sends() {
    std::erase_if(sends_, [&](Send& s) {
      int done = 0;
      WEFT_MPI_CHECK(MPI_Test(&s.request, &done, MPI_STATUS_IGNORE));
      if (done) return true;
      if (!lost(s.dst)) return false;
      MPI_Request_free(&s.request);
      (void)s.beat.release();
      return true;
    });
  }

  // Rank 0: rank r is silent; writes off what the loss handler names, or returns false.
  bool write_off(int r, const std::string& message) {
    // Held until the ranks are marked lost: set_loss_handler() waits for a handler that runs.
    std::lock_guard<std::mutex> handler_lock(handler_mu_);
    if (!loss_handler_) return false;
    const std::vector<int> ranks = loss_handler_(r, message);
    if (ranks.empty()) return false;
    // Every written-off rank is told to exit: the live ones, and r itself should it only have
    // been stopped (it would otherwise come back to a rank 0 that no longer beats to it).
    for (int w : ranks) {
      WEFT_CHECK(w > 0 && w < size_) << "cannot write off rank " << w;
      send(w, Beat{.rank = 0, .type = kDismiss, .peer = r});
    }
    for (int w : ranks) mark_lost(w);
    probe_cv_.notify_all();
    for (int d = 1; d < size_; ++d) {
      for (int w : ranks) send(d, Beat{.rank = 0, .type = kLost, .peer = w});
    }
    std::fprintf(stderr, "weft: rank 0: %s; going on without rank%s %s\n", message.c_str(),
                 ranks.size() > 1 ? "s" : "", absl::StrJoin(ranks, ", ").c_str());
    std::fflush(stderr);
    return true;
  }

  [[noreturn]] void fail(const std::string& message, int code = kExitCommFailure,
                         const char* what = "comm failure") {
    std::function<void(const std::string&)> hook;
    {
      std::lock_guard<std::mutex> lock(probe_mu_);
      hook = failure_hook_;
    }
    if (hook) hook(message);
    std::fprintf(stderr, "weft: rank %d: %s: %s; ending the job (exit code %d)\n", rank_, what,
                 message.c_str(), code);
    std::fflush(stderr);
    std::fflush(stdout);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

  // Rank 0: a rank that ended with an error while others go on (an error only it saw; they will
  // wait for it in their next collective). After a short grace, in which the others may end
  // with the same error, the job ends with that rank's exit code.
  void check_errors(ActivityClock::time_point now) {
    int failed = -1;
    bool any_running = false;
    for (int r = 0; r < size_; ++r) {
      if (lost(r)) continue;
      if (beats_[r].type != kFinished) {
        any_running = true;
      } else if (beats_[r].exit_code != 0 && failed < 0) {
        failed = r;
      }
    }
    if (failed < 0 || !any_running) {
      error_since_.reset();
      return;
    }
    if (!error_since_) error_since_ = now;
    if (seconds(now - *error_since_) < std::min(timeout_s_ / 2, 5.0)) return;
    std::vector<std::string> running;
    for (int r = 0; r < size_; ++r) {
      if (beats_[r].type != kFinished && !lost(r)) {
        running.push_back(absl::StrFormat("rank %d is %s", r, describe(beats_[r])));
      }
    }
    fail(absl::StrFormat("rank %d ended with exit code %d while the others went on (%s)", failed,
                         beats_[failed].exit_code, absl::StrJoin(running, "; ")),
         beats_[failed].exit_code, "a rank failed alone");
  }

  // Rank 0: the verdict on what every rank last said, or nothing while all is well.
  void check_all(ActivityClock::time_point now) {
    beats_[0] = own_beat();
    check_errors(now);
    for (int r = 1; r < size_; ++r) {
      const double silent = seconds(now - last_seen_[r]);
      if (silent > timeout_s_ && !acked_[r] && !lost(r)) {
        const std::string message = absl::StrFormat(
            "rank %d sent no heartbeat for %.1f s (--comm-timeout %g): it died or is stopped; its "
            "last report: %s",
            r, silent, timeout_s_, describe(beats_[r]));
        if (!write_off(r, message)) fail(message);
      }
    }
    // A rank that has missed its beats is judged by its silence, above: a wait on it (or on a
    // written-off rank) is not a hang of its own.
    const auto gone = [&](int m) {
      return m >= 0 && m < size_ && m != rank_ &&
             (lost(m) || seconds(now - last_seen_[m]) > 2 * interval_s_);
    };
    for (int r = 0; r < size_; ++r) {
      const Beat& b = beats_[r];
      if (lost(r) || b.type == kFinished || !b.busy || b.idle_ok || b.age_s <= timeout_s_) continue;
      if (b.peer >= 0 ? gone(b.peer)
                      : !b.members_cut && std::ranges::any_of(parse_ranks(b.members), gone)) {
        continue;
      }
      std::string culprits;
      if (b.peer >= 0) {
        if (b.peer < size_) {
          culprits = absl::StrFormat("rank %d is %s", b.peer, describe(beats_[b.peer]));
        }
      } else if (b.members_cut) {
        culprits =
            "its group is too large to list here; the ranks that went silent or are "
            "computing are the suspects";
      } else {
        std::vector<std::string> missing;
        for (int m : parse_ranks(b.members)) {
          if (m < 0 || m >= size_ || same_op(b, beats_[m])) continue;
          missing.push_back(absl::StrFormat("rank %d is %s", m, describe(beats_[m])));
        }
        culprits = missing.empty() ? "every rank of the group is in it (the transport is stuck)"
                                   : absl::StrCat("not in it: ", absl::StrJoin(missing, "; "));
      }
      fail(absl::StrFormat("rank %d has waited %.1f s (--comm-timeout %g) in %s; %s", r, b.age_s,
                           timeout_s_, op_text(b), culprits));
    }
  }

  // Ranks > 0: rank 0's silence, or (rank 0 having said nothing) this rank's own stuck wait.
  void check_root(ActivityClock::time_point now) {
    const double silent = seconds(now - last_seen_[0]);
    const Beat own = own_beat();
    if (silent > timeout_s_) {
      fail(absl::StrFormat(
          "rank 0 (which watches the other ranks) sent no heartbeat for %.1f s (--comm-timeout "
          "%g): it died or is stopped; this rank is %s",
          silent, timeout_s_, describe(own)));
    }
    if (own.busy && !own.idle_ok && own.age_s > 2 * timeout_s_ + 4 * interval_s_) {
      fail(absl::StrFormat("this rank has been %s (--comm-timeout %g)", describe(own), timeout_s_));
    }
  }

  // Rank 0: sends the probe unresponsive_ranks() asked for.
  void send_probe() {
    std::lock_guard<std::mutex> lock(probe_mu_);
    if (!probe_asked_) return;
    probe_asked_ = false;
    for (int r = 0; r < size_; ++r) {
      if (r != rank_) send(r, Beat{.rank = rank_, .type = kProbe, .probe = probe_});
    }
  }

  void note_answer(int src, int32_t probe) {
    std::lock_guard<std::mutex> lock(probe_mu_);
    if (probe == 0 || probe != probe_) return;
    answered_[src] = true;
    probe_cv_.notify_all();
  }

  // Once, when the process is asked to terminate: what it is in, and (rank 0) who went silent.
  void report_signal(int signal, ActivityClock::time_point now) {
    std::string text = absl::StrFormat("weft: rank %d: signal %d (%s) while %s", rank_, signal,
                                       strsignal(signal), describe(own_beat()));
    for (int r = 1; rank_ == 0 && r < size_; ++r) {
      const double silent = seconds(now - last_seen_[r]);
      if (silent > 2 * interval_s_) {
        absl::StrAppendFormat(&text, "; rank %d silent for %.1f s, its last report: %s", r, silent,
                              describe(beats_[r]));
      }
    }
    std::fprintf(stderr, "%s\n", text.c_str());
    std::fflush(stderr);
  }

  void loop() {
    Beat in;
    MPI_Request recv = MPI_REQUEST_NULL;
    auto post = [&] {
      WEFT_MPI_CHECK(MPI_Irecv(&in, sizeof(Beat), MPI_BYTE, rank_ == 0 ? MPI_ANY_SOURCE : 0, kTag,
                               comm_, &recv));
    };
    post();
    ActivityClock::time_point last_send{};
    ActivityClock::time_point released_at{};
    bool released = false;
    bool done = false;
    bool finish_sent = false;
    while (!done) {
      const ActivityClock::time_point now = ActivityClock::now();
      for (;;) {  // everything that has arrived
        int flag = 0;
        MPI_Status status;
        WEFT_MPI_CHECK(MPI_Test(&recv, &flag, &status));
        if (!flag) break;
        const int src = status.MPI_SOURCE;
        last_seen_[src] = now;
        if (rank_ == 0) {
          if (in.type == kAck) {
            acked_[src] = true;
          } else {
            beats_[src] = in;
            note_answer(src, in.probe);
          }
        } else if (in.type == kProbe) {
          Beat b = own_beat();
          b.probe = in.probe;
          send(0, b);
        } else if (in.type == kLost || in.type == kDismiss) {
          mark_lost(in.peer);
          if (in.type == kDismiss) {
            const std::string why =
                in.peer == rank_
                    ? std::string("this rank was silent for --comm-timeout")
                    : absl::StrFormat("rank %d, which this rank works with, died", in.peer);
            std::fprintf(stderr,
                         "weft: rank %d: %s; rank 0 goes on without this rank; exiting (exit "
                         "code %d)\n",
                         rank_, why.c_str(), kExitCommFailure);
            std::fflush(stderr);
            std::fflush(stdout);
            std::_Exit(kExitCommFailure);
          }
        } else if (in.type == kRelease) {
          send(0, Beat{.rank = rank_, .type = kAck});
          done = true;
          break;
        }
        post();
      }
      if (done) break;
      if (pending_signal_ && !signal_reported_) {
        if (const int signal = pending_signal_(); signal != 0) {
          report_signal(signal, now);
          signal_reported_ = true;
        }
      }
      // A rank that has just finished says so at once: the others' exit waits for it.
      const bool finish_news = finished_.load() && !finish_sent;
      if (!released && (finish_news || seconds(now - last_send) >= interval_s_)) {
        const Beat b = own_beat();
        finish_sent = finish_sent || b.type == kFinished;
        if (rank_ == 0) {
          for (int r = 1; r < size_; ++r) send(r, b);
        } else {
          send(0, b);
        }
        last_send = now;
      }
      if (rank_ == 0 && !released) send_probe();
      reap_sends();
      if (const std::string error = poll_all(); !error.empty()) fail(error);
      if (rank_ == 0) {
        if (!released) {
          check_all(now);
          bool all = finished_.load();
          for (int r = 1; r < size_ && all; ++r) all = beats_[r].type == kFinished || lost(r);
          if (all) {
            for (int r = 1; r < size_; ++r) send(r, Beat{.rank = 0, .type = kRelease});
            released = true;
            released_at = now;
          }
        } else {
          bool all = true;
          for (int r = 1; r < size_ && all; ++r) all = acked_[r] || lost(r);
          // A rank that finished and then died before its ack does not hold rank 0 up.
          if (all || seconds(now - released_at) > timeout_s_) done = true;
        }
      } else {
        check_root(now);
      }
      if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (recv != MPI_REQUEST_NULL) {
      MPI_Cancel(&recv);
      MPI_Wait(&recv, MPI_STATUS_IGNORE);
    }
    reap_sends();
    for (Send& s : sends_) {
      // A beat still on its way to a rank that left after a timeout: MPI may still read the
      // buffer, so it is left allocated (a few hundred bytes, at most once per rank and run).
      MPI_Request_free(&s.request);
      (void)s.beat.release();
    }
  }

  MPI_Comm comm_;
  double timeout_s_;
  std::function<int()> pending_signal_;
  bool signal_reported_ = false;
  std::optional<ActivityClock::time_point> error_since_;  // rank 0: a rank failed alone since
  double interval_s_ = 1;
  int rank_ = 0;
  int size_ = 1;
  std::atomic<bool> finished_{false};
  std::atomic<int> exit_code_{0};
  // The thread's own:
  std::vector<ActivityClock::time_point> last_seen_;
  std::vector<Beat> beats_;  // rank 0: what each rank said last
  std::vector<bool> acked_;
  struct Send {
    std::unique_ptr<Beat> beat;
    MPI_Request request;
    int dst;
  };
  std::deque<Send> sends_;
  // Written-off ranks (set by the thread, read by any).
  mutable std::mutex lost_mu_;
  std::vector<bool> lost_;
  // Shared with the callers of unresponsive_ranks() and set_failure_hook():
  std::mutex probe_mu_;
  std::condition_variable probe_cv_;
  int32_t probe_ = 0;  // the newest probe's number
  bool probe_asked_ = false;
  std::vector<bool> answered_;  // per rank: answered probe_
  std::function<void(const std::string&)> failure_hook_;
  std::mutex handler_mu_;  // guards loss_handler_, held while it runs
  std::function<std::vector<int>(int, const std::string&)> loss_handler_;
  std::thread thread_;
};

HealthMonitor::HealthMonitor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HealthMonitor::~HealthMonitor() = default;

std::unique_ptr<HealthMonitor> HealthMonitor::start(double timeout_s,
                                                    std::function<int()> pending_signal) {
  WEFT_CHECK(timeout_s > 0) << "comm timeout " << timeout_s << " must be > 0";
  MPI_Comm comm = MPI_COMM_NULL;
  WEFT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm));
  return std::unique_ptr<HealthMonitor>(
      new HealthMonitor(std::make_unique<Impl>(comm, timeout_s, std::move(pending_signal))));
}

void HealthMonitor::finish(int exit_code) { impl_->finish(exit_code); }

std::vector<int> HealthMonitor::unresponsive_ranks(double wait_s) {
  return impl_->unresponsive_ranks(wait_s);
}

void HealthMonitor::set_failure_hook(std::function<void(const std::string&)> hook) {
  impl_->set_failure_hook(std::move(hook));
}

void HealthMonitor::set_loss_handler(
    std::function<std::vector<int>(int, const std::string&)> handler) {
  impl_->set_loss_handler(std::move(handler));
}

std::vector<int> HealthMonitor::lost_ranks() const { return impl_->lost_ranks(); }

bool HealthMonitor::is_lost(int rank) const { return impl_->is_lost(rank); }

}  // namespace weft::comm
