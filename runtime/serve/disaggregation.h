// Disaggregated serving (docs/serving.md "Disaggregated prefill and decode"; DistServe,
// Splitwise): the world is a prefill instance (ranks [0, P), tensor-parallel over them) and
// decode instances of decode_tp ranks each (ranks P + d*decode_tp ...). Rank 0 serves HTTP, runs
// the prefill engine and routes each request to a decode instance; after a request's prefill
// its keys and values move to that instance layer by layer, and the instance's leader runs the
// decode engine and streams the request's updates back to rank 0.
//
// This file: the layout, the links between the roles (their own communicators, so a receive
// that waits on one never holds up another), the control messages (JSON) and the KV transfer.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
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

struct DisaggLayout {
  int prefill_ranks = 1;  // = the prefill instance's tp
  int decode_ranks = 1;
  int decode_tp = 1;
  int64_t kv_heads = 0;  // the model's KV heads (both tps divide them)
  int block_size = 16;

  [[nodiscard]] int instances() const { return decode_ranks / decode_tp; }
  [[nodiscard]] int leader(int instance) const { return prefill_ranks + instance * decode_tp; }
  // The decode instance of world rank `rank` (-1 for a prefill rank).
  [[nodiscard]] int instance_of(int rank) const {
    return rank < prefill_ranks ? -1 : (rank - prefill_ranks) / decode_tp;
  }
  // KV heads [first, end) of prefill rank r, of decode rank s of an instance.
  [[nodiscard]] std::pair<int64_t, int64_t> prefill_heads(int r) const {
    const int64_t n = kv_heads / prefill_ranks;
    return {r * n, (r + 1) * n};
  }
  [[nodiscard]] std::pair<int64_t, int64_t> decode_heads(int s) const {
    const int64_t n = kv_heads / decode_tp;
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
  comm::WorkPtr pending_;
};

// One rank's view of the disaggregated world. create() is collective over `world`.
class Disaggregation {
 public:
  static std::unique_ptr<Disaggregation> create(comm::Communicator& world, DisaggLayout layout);
  // Rank 0: waits for the senders to send what is queued (they end after a "shutdown" message).
  ~Disaggregation();

  [[nodiscard]] const DisaggLayout& layout() const { return layout_; }
  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] bool is_front() const { return rank_ == 0; }
  [[nodiscard]] bool is_prefill() const { return rank_ < layout_.prefill_ranks; }
  [[nodiscard]] bool is_leader() const {
    return !is_prefill() && (rank_ - layout_.prefill_ranks) % layout_.decode_tp == 0;
  }
  [[nodiscard]] int instance() const { return layout_.instance_of(rank_); }

  // The links: kv (every rank); rank 0 <-> leader d: down(d) carries requests, cancels and the
  // shutdown, up(d) the updates (rank 0 and that leader only; rank 0 is 0 on each, the leader
  // 1). A leader's own instance: down(instance()), up(instance()).
  [[nodiscard]] comm::Communicator& kv() { return *kv_; }
  [[nodiscard]] comm::Communicator& down(int d) { return *down_.at(d); }
  [[nodiscard]] comm::Communicator& up(int d) { return *up_.at(d); }
  // Queues a message for down(d), from any thread: a thread per instance sends them in order,
  // so a send that never completes (the instance's leader died) holds up that thread only,
  // never the engine or an HTTP request (docs/serving.md "Disaggregated prefill and decode").
  void send_down(int d, const nlohmann::json& message);

  // ---- the KV transfer, layer by layer -----------------------------------------------------
  // A prefill rank: sends the keys and values of `slots` (the tokens, in order) of each layer's
  // cache (k, v [blocks, block_size, Hkv_local, d]) to the ranks of decode instance d that hold
  // their heads, asynchronously (the sends own their buffers). Returns the bytes sent.
  int64_t send_kv(const std::vector<std::pair<Tensor, Tensor>>& layers,
                  const std::vector<int64_t>& slots, int instance, int tag);
  // A rank of a decode instance: receives from every prefill rank that holds some of its heads
  // and writes them at `slots` (-1: receive and drop).
  void receive_kv(const std::vector<std::pair<Tensor, Tensor>>& layers,
                  const std::vector<int64_t>& slots, int tag);
  // Waits for the sends still in flight.
  void finish_sends();

 private:
  Disaggregation(DisaggLayout layout, int rank) : layout_(layout), rank_(rank) {}
  void reap_sends();
  void send_loop(int d);

  DisaggLayout layout_;
  int rank_;
  std::unique_ptr<comm::Communicator> kv_;
  std::vector<std::unique_ptr<comm::Communicator>> down_, up_;  // null where not a member
  std::vector<std::unique_ptr<comm::Communicator>> others_;     // the split's other halves
  // Rank 0: each instance's queue of messages for down(d) and its sender.
  std::mutex outbox_mu_;
  std::condition_variable outbox_cv_;
  std::vector<std::deque<nlohmann::json>> outbox_;
  bool closing_ = false;
  std::vector<std::thread> senders_;
  std::vector<comm::WorkPtr> sends_;
};

}  // namespace weft::serve
