// Disaggregated serving (docs/serving.md "Disaggregated prefill and decode"; DistServe,
// Splitwise): the world is prefill instances of prefill_tp ranks each (ranks p * prefill_tp ...)
// and decode instances of decode_tp ranks each (ranks prefill_ranks + d * decode_tp ...), each
// tensor-parallel over its ranks. Rank 0 serves HTTP, leads prefill instance 0 and routes each
// request to a prefill instance and a decode instance; after a request's prefill its keys and
// values move from the one to the other layer by layer, and the decode instance's leader runs the
// decode engine and streams the request's updates back to rank 0.
//
// This file: the layout, the links between the roles (their own communicators, so a receive
// that waits on one never holds up another), the control messages (JSON) and the KV transfer.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "nlohmann/json.hpp"
#include "runtime/core/tensor.h"

namespace weft::serve {

// Instances are numbered prefill first: instance g < prefill_instances() is prefill instance g,
// the others decode instance g - prefill_instances(). E.g. 5 ranks, --prefill-ranks 2
// --prefill-tp 1 --decode-ranks 3 --decode-tp 3: instances 0 (rank 0), 1 (rank 1), 2 (ranks 2-4).
struct DisaggLayout {
  int prefill_ranks = 1;
  int prefill_tp = 1;
  int decode_ranks = 1;
  int decode_tp = 1;
  int64_t kv_heads = 0;  // the model's KV heads (both tps divide them)
  int block_size = 16;

  [[nodiscard]] int prefill_instances() const { return prefill_ranks / prefill_tp; }
  [[nodiscard]] int instances() const { return prefill_instances() + decode_ranks / decode_tp; }
  [[nodiscard]] bool is_prefill(int instance) const { return instance < prefill_instances(); }
  [[nodiscard]] int tp(int instance) const { return is_prefill(instance) ? prefill_tp : decode_tp; }
  [[nodiscard]] int leader(int instance) const {
    return is_prefill(instance) ? instance * prefill_tp
                                : prefill_ranks + (instance - prefill_instances()) * decode_tp;
  }
  // The instance of world rank `rank`.
  [[nodiscard]] int instance_of(int rank) const {
    return rank < prefill_ranks ? rank / prefill_tp
                                : prefill_instances() + (rank - prefill_ranks) / decode_tp;
  }
  // KV heads [first, end) of rank s (0 for the leader) of an instance.
  [[nodiscard]] std::pair<int64_t, int64_t> heads(int instance, int s) const {
    const int64_t n = kv_heads / tp(instance);
    return {s * n, (s + 1) * n};
  }
};

// A JSON message on a link: a one-int header (its length), then the bytes.
void send_message(comm::Communicator& link, int dst, const nlohmann::json& message);

// Messages from one peer, received without blocking: poll() returns the next one once it is
// in (the header's receive stays posted between polls, until a "bye" or "shutdown" message,
// the link's last).
class MessageInbox {
 public:
  MessageInbox(comm::Communicator& link, int src);
  [[nodiscard]] std::optional<nlohmann::json> poll();

 private:
  void post();
  comm::Communicator& link_;
  int src_;
  Tensor header_;
  Tensor body_;            // defined while the body's receive is pending
  comm::WorkPtr pending_;  // the header's receive, then the body's
};

// One rank's view of the disaggregated world. create() is collective over `world`.
class Disaggregation {
 public:
  // `lost(r)` says whether world rank r has been written off (comm/health_monitor.h); null: none
  // ever is.
  static std::unique_ptr<Disaggregation> create(comm::Communicator& world, DisaggLayout layout,
                                                std::function<bool(int)> lost = nullptr);
  // Rank 0: waits for the senders to send what is queued (they end after a "shutdown" message).
  // The links and sends of a lost instance are left as they are (never freed: an operation with
  // a dead rank never ends).
  ~Disaggregation();

  [[nodiscard]] const DisaggLayout& layout() const { return layout_; }
  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] bool is_front() const { return rank_ == 0; }
  [[nodiscard]] int instance() const { return layout_.instance_of(rank_); }
  [[nodiscard]] bool is_prefill() const { return layout_.is_prefill(instance()); }
  [[nodiscard]] bool is_leader() const { return rank_ == layout_.leader(instance()); }

  // The links: rank 0 <-> the leader of instance g >= 1: down(g) carries requests, cancels and
  // the shutdown, up(g) the updates of a decode instance and the finished prefills of a prefill
  // instance (rank 0 and that leader only; rank 0 is 0 on each, the leader 1). A leader's own
  // instance: down(instance()), up(instance()). The keys and values move on a link of their own
  // per decode instance (its ranks and every prefill rank), so that sends to an instance that
  // died hold up no other.
  [[nodiscard]] comm::Communicator& down(int g) { return *down_.at(g); }
  [[nodiscard]] comm::Communicator& up(int g) { return *up_.at(g); }
  // Queues a message for down(g), from any thread: a thread per instance sends them in order,
  // so a send that never completes (the instance's leader died) holds up that thread only,
  // never the engine or an HTTP request (docs/serving.md "Disaggregated prefill and decode").
  void send_down(int g, const nlohmann::json& message);
  // Rank 0: instance g is lost (a rank of it died): its queued messages are dropped, later ones
  // too, and its sender is not waited for.
  void forget(int g);
  // Whether instance g has a written-off rank.
  [[nodiscard]] bool lost(int g) const;

  // ---- the KV transfer, layer by layer -----------------------------------------------------
  // A prefill rank: sends the keys and values of `slots` (the tokens, in order) of each layer's
  // cache (k, v [blocks, block_size, Hkv_local, d]) to the ranks of decode instance `to` that
  // hold their heads, asynchronously (the sends own their buffers). Returns the bytes sent.
  int64_t send_kv(const std::vector<std::pair<Tensor, Tensor>>& layers,
                  const std::vector<int64_t>& slots, int to, int tag);
  // A rank of a decode instance: receives from every rank of prefill instance `from` that holds
  // some of its heads and writes them at `slots` (-1: receive and drop).
  void receive_kv(const std::vector<std::pair<Tensor, Tensor>>& layers,
                  const std::vector<int64_t>& slots, int from, int tag);
  // Waits for the sends still in flight.
  void finish_sends();

 private:
  Disaggregation(DisaggLayout layout, int rank) : layout_(layout), rank_(rank) {}
  // Rank 0's queued messages for down(g), shared with the sender threads: a lost instance's
  // sender is detached and may outlive this object (blocked in a send to a rank that was only
  // stopped), so it owns what it touches.
  struct Outbox {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::deque<nlohmann::json>> queues;  // per instance
    std::vector<bool> forgotten;                     // per instance: forget()
    bool closing = false;
  };
  void reap_sends();
  static void send_loop(std::shared_ptr<Outbox> box, comm::Communicator* link, int g);
  // The KV link of decode instance g, and the rank of a world rank on it.
  [[nodiscard]] comm::Communicator& kv(int g) { return *kv_.at(g); }
  [[nodiscard]] int kv_rank(int g, int world_rank) const {
    return world_rank < layout_.prefill_ranks
               ? world_rank
               : world_rank - layout_.leader(g) + layout_.prefill_ranks;
  }

  DisaggLayout layout_;
  int rank_;
  std::function<bool(int)> lost_rank_;
  std::vector<std::unique_ptr<comm::Communicator>> kv_;  // per instance; null for non-members
  std::vector<std::unique_ptr<comm::Communicator>> down_, up_;  // null for 0 and non-members
  std::vector<std::unique_ptr<comm::Communicator>> others_;     // the split's other halves
  // Rank 0: each instance's queue of messages for down(g) and its sender.
  std::shared_ptr<Outbox> outbox_ = std::make_shared<Outbox>();
  std::vector<std::thread> senders_;               // index g - 1
  std::vector<std::vector<comm::WorkPtr>> sends_;  // per decode instance
};

}  // namespace weft::serve
