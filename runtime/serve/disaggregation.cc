#include "runtime/serve/disaggregation.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "comm/activity.h"
#include "runtime/core/check.h"

namespace weft::serve {

namespace {

constexpr int kHeaderTag = 1;
constexpr int kBodyTag = 2;

// The bytes of `text` in an i64 tensor (the communicators move tensors).
Tensor pack_text(const std::string& text) {
  Tensor t =
      Tensor::zeros({static_cast<int64_t>((text.size() + 7) / 8)}, DType::kI64, Device::cpu());
  std::memcpy(t.raw(), text.data(), text.size());
  return t;
}

}  // namespace

void send_message(comm::Communicator& link, int dst, const nlohmann::json& message) {
  const std::string text = message.dump();
  Tensor header = Tensor::from_ints({static_cast<int64_t>(text.size())}, {1});
  link.send(header, dst, kHeaderTag);
  if (!text.empty()) link.send(pack_text(text), dst, kBodyTag);
}

MessageInbox::MessageInbox(comm::Communicator& link, int src) : link_(link), src_(src) { post(); }

void MessageInbox::post() {
  header_ = Tensor::empty({1}, DType::kI64, Device::cpu());
  const comm::IdleWaitScope idle;  // the next message may be a long time coming
  pending_ = link_.recv_async(header_, src_, kHeaderTag);
}

std::optional<nlohmann::json> MessageInbox::poll() {
  if (!pending_->done()) return std::nullopt;
  pending_->wait();
  int64_t length = header_.data<int64_t>()[0];
  if (length > 0 && !body_.defined()) {
    // The body is received without blocking too: a sender that dies between the two holds up
    // no thread.
    body_ = Tensor::empty({(length + 7) / 8}, DType::kI64, Device::cpu());
    pending_ = link_.recv_async(body_, src_, kBodyTag);
    if (!pending_->done()) return std::nullopt;
    pending_->wait();
  }
  std::string text(static_cast<size_t>(length), '\0');
  if (length > 0) std::memcpy(text.data(), body_.raw(), static_cast<size_t>(length));
  body_ = Tensor();
  nlohmann::json message = nlohmann::json::parse(text);
  // After a link's last message no receive may stay posted: the communicator's thread finishes
  // every posted operation before it exits.
  const bool last = message["type"] == "bye" || message["type"] == "shutdown";
  if (!last) post();
  return message;
}

std::unique_ptr<Disaggregation> Disaggregation::create(comm::Communicator& world,
                                                       DisaggLayout layout,
                                                       std::function<bool(int)> lost) {
  WEFT_CHECK_EQ(world.size(), layout.prefill_ranks + layout.decode_ranks)
      << "the disaggregated layout must name every rank";
  std::unique_ptr<Disaggregation> d(new Disaggregation(layout, world.rank()));
  d->lost_rank_ = std::move(lost);
  d->kv_.resize(layout.instances());
  d->sends_.resize(layout.instances());
  for (int g = layout.prefill_instances(); g < layout.instances(); ++g) {
    const bool member =
        world.rank() < layout.prefill_ranks || layout.instance_of(world.rank()) == g;
    std::unique_ptr<comm::Communicator> c =
        world.split(member ? 1 : 0, world.rank(), "kv_transfer");
    (member ? d->kv_[g] : d->others_.emplace_back()) = std::move(c);
  }
  // One down and one up link per instance but rank 0's own (index 0 stays null).
  d->down_.resize(1);
  d->up_.resize(1);
  for (int g = 1; g < layout.instances(); ++g) {
    const bool member = world.rank() == 0 || world.rank() == layout.leader(g);
    for (auto* links : {&d->down_, &d->up_}) {
      std::unique_ptr<comm::Communicator> c = world.split(
          member ? 1 : 0, world.rank(), links == &d->down_ ? "disagg_down" : "disagg_up");
      if (member) {
        links->push_back(std::move(c));
      } else {
        links->push_back(nullptr);
        d->others_.push_back(std::move(c));
      }
    }
  }
  d->outbox_->forgotten.assign(layout.instances(), false);
  if (d->is_front()) {
    d->outbox_->queues.resize(layout.instances());
    for (int g = 1; g < layout.instances(); ++g) {
      d->senders_.emplace_back(send_loop, d->outbox_, &d->down(g), g);
    }
  }
  return d;
}

Disaggregation::~Disaggregation() {
  {
    std::lock_guard<std::mutex> lock(outbox_->mu);
    outbox_->closing = true;
    outbox_->cv.notify_all();
  }
  for (std::thread& t : senders_) {
    if (t.joinable()) t.join();
  }
  for (int g = 1; g < layout_.instances(); ++g) {
    if (!lost(g)) continue;
    // An operation with a dead rank never ends, and a communicator's destructor waits for its
    // operations: these stay allocated until the process ends.
    for (auto* links : {&down_, &up_, &kv_}) (void)links->at(g).release();
  }
}

bool Disaggregation::lost(int g) const {
  {
    std::lock_guard<std::mutex> lock(outbox_->mu);
    if (outbox_->forgotten.at(g)) return true;
  }
  if (!lost_rank_) return false;
  for (int s = 0; s < layout_.tp(g); ++s) {
    if (lost_rank_(layout_.leader(g) + s)) return true;
  }
  return false;
}

void Disaggregation::send_down(int g, const nlohmann::json& message) {
  std::lock_guard<std::mutex> lock(outbox_->mu);
  if (outbox_->forgotten.at(g)) return;
  outbox_->queues.at(g).push_back(message);
  outbox_->cv.notify_all();
}

void Disaggregation::forget(int g) {
  std::lock_guard<std::mutex> lock(outbox_->mu);
  outbox_->forgotten.at(g) = true;
  outbox_->queues.at(g).clear();
  outbox_->cv.notify_all();
  // It may be in a send that never ends.
  senders_.at(g - 1).detach();
}

void Disaggregation::send_loop(std::shared_ptr<Outbox> box, comm::Communicator* link, int g) {
  while (true) {
    nlohmann::json message;
    {
      std::unique_lock<std::mutex> lock(box->mu);
      box->cv.wait(lock,
                   [&] { return !box->queues[g].empty() || box->closing || box->forgotten[g]; });
      // Closing without a shutdown (serving never began), or the instance is lost.
      if (box->queues[g].empty() || box->forgotten[g]) return;
      message = std::move(box->queues[g].front());
      box->queues[g].pop_front();
    }
    send_message(*link, 1, message);
    if (message["type"] == "shutdown") return;  // the link's last
  }
}

namespace {

// The heads two ranks' ranges share, [first, end) (empty when first >= end).
std::pair<int64_t, int64_t> shared_heads(std::pair<int64_t, int64_t> a,
                                         std::pair<int64_t, int64_t> b) {
  return {std::max(a.first, b.first), std::min(a.second, b.second)};
}

}  // namespace

int64_t Disaggregation::send_kv(const std::vector<std::pair<Tensor, Tensor>>& layers,
                                const std::vector<int64_t>& slots, int to, int tag) {
  reap_sends();
  const int from = instance();
  const auto [lo, hi] = layout_.heads(from, rank_ - layout_.leader(from));
  const int64_t n = static_cast<int64_t>(slots.size());
  int64_t bytes = 0;
  for (const auto& [k, v] : layers) {
    const int64_t local = k.dim(2), hd = k.dim(3);
    WEFT_CHECK_EQ(local, hi - lo) << "a prefill rank's cache holds " << local << " KV heads";
    for (int s = 0; s < layout_.tp(to); ++s) {
      const auto [first, end] = shared_heads({lo, hi}, layout_.heads(to, s));
      if (first >= end) continue;
      const int64_t heads = end - first;
      Tensor packed = Tensor::empty({2, n, heads, hd});  // k then v of the tokens, these heads
      for (int which = 0; which < 2; ++which) {
        // Row slot * local + h of the cache viewed as [slots * local, hd] is head h of a slot:
        // a token's heads [first, end) are contiguous rows, copied on whatever device holds them.
        const Tensor src = (which == 0 ? k : v).view({-1, hd});
        const Tensor dst = packed.slice(which, which + 1).view({n * heads, hd});
        for (int64_t t = 0; t < n; ++t) {
          const int64_t at = slots[t] * local + (first - lo);
          dst.slice(t * heads, (t + 1) * heads).copy_from(src.slice(at, at + heads));
        }
      }
      bytes += static_cast<int64_t>(packed.nbytes());
      sends_[to].push_back(kv(to).send_async(packed, kv_rank(to, layout_.leader(to) + s), tag));
    }
  }
  return bytes;
}

void Disaggregation::receive_kv(const std::vector<std::pair<Tensor, Tensor>>& layers,
                                const std::vector<int64_t>& slots, int from, int tag) {
  const int to = instance();
  const auto [lo, hi] = layout_.heads(to, rank_ - layout_.leader(to));
  const int64_t n = static_cast<int64_t>(slots.size());
  for (const auto& [k, v] : layers) {
    const int64_t local = k.dim(2), hd = k.dim(3);
    for (int r = 0; r < layout_.tp(from); ++r) {
      const auto [first, end] = shared_heads({lo, hi}, layout_.heads(from, r));
      if (first >= end) continue;
      const int64_t heads = end - first;
      Tensor packed = Tensor::empty({2, n, heads, hd});
      kv(to).recv(packed, kv_rank(to, layout_.leader(from) + r), tag);
      for (int which = 0; which < 2; ++which) {
        const Tensor dst = (which == 0 ? k : v).view({-1, hd});
        const Tensor src = packed.slice(which, which + 1).view({n * heads, hd});
        for (int64_t t = 0; t < n; ++t) {
          if (slots[t] < 0) continue;
          const int64_t at = slots[t] * local + (first - lo);
          dst.slice(at, at + heads).copy_from(src.slice(t * heads, (t + 1) * heads));
        }
      }
    }
  }
}

void Disaggregation::reap_sends() {
  for (std::vector<comm::WorkPtr>& sends : sends_) {
    std::erase_if(sends, [](const comm::WorkPtr& w) {
      if (!w->done()) return false;
      w->wait();
      return true;
    });
  }
}

void Disaggregation::finish_sends() {
  for (int g = 0; g < layout_.instances(); ++g) {
    if (lost(g)) continue;  // never done: left to the destructor
    for (const comm::WorkPtr& w : sends_[g]) w->wait();
    sends_[g].clear();
  }
}

}  // namespace weft::serve
