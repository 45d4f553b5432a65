// Ulysses and USP (docs/algorithms.md "Ulysses"): an all-to-all-v inside each group of `a`
// consecutive sp ranks turns [c tokens, all heads] into [a*c tokens, this rank's heads], the
// ring (sp_ring_attention.cc) runs across the P/a groups on those tokens, and the reverse
// all-to-all-v brings the output back. a = 1 is plain ring attention (no exchange), a = P plain
// Ulysses (a ring of one rank: local causal attention).
//
// Heads are split as evenly as possible (the first H % a ranks get one more). Each rank receives
// the KV heads its query heads read (GQA), so a KV head is sent to several ranks when their query
// heads share it; its gradient copies are summed on the way back. When the received KV heads do
// not line up with the query heads for the kernel's h / (H/Hkv) rule, they are expanded to one
// KV head per query head after the exchange (and the expansion's gradient summed).
#include <numeric>
#include <optional>

#include "absl/strings/str_cat.h"
#include "parallel/sp_attention_impl.h"

namespace weft::parallel::sp_detail {

namespace {

struct HeadRange {
  int64_t begin = 0, end = 0;
  [[nodiscard]] int64_t size() const { return end - begin; }
};

std::vector<HeadRange> split_heads(int64_t heads, int a) {
  std::vector<HeadRange> out;
  int64_t begin = 0;
  for (int j = 0; j < a; ++j) {
    const int64_t n = heads / a + (j < heads % a ? 1 : 0);
    out.push_back({begin, begin + n});
    begin += n;
  }
  return out;
}

// The KV heads read by each range of query heads (group = H / Hkv query heads per KV head).
std::vector<HeadRange> kv_heads_for(const std::vector<HeadRange>& q, int64_t group) {
  std::vector<HeadRange> out;
  for (const HeadRange& r : q) out.push_back({r.begin / group, (r.end - 1) / group + 1});
  return out;
}

// For each local query head e of `q`, the index within `kv` of the KV head slot it reads: the
// received heads themselves when the kernel's rule e / (nq/nkv) already picks the right one,
// otherwise one slot per query head (an expansion).
std::vector<int64_t> kv_slots(const HeadRange& q, const HeadRange& kv, int64_t group) {
  std::vector<int64_t> expanded;
  for (int64_t h = q.begin; h < q.end; ++h) expanded.push_back(h / group - kv.begin);
  bool aligned = q.size() % kv.size() == 0;
  for (int64_t e = 0; aligned && e < q.size(); ++e) {
    aligned = expanded[e] == e / (q.size() / kv.size());
  }
  if (!aligned) return expanded;
  std::vector<int64_t> identity(kv.size());
  std::iota(identity.begin(), identity.end(), 0);
  return identity;
}

// The Ulysses all-to-all-v for one tensor: x [Bx, c, Hx, d] (all heads of this member's c
// tokens) <-> y [Bx, Tu, n, d] (the group's Tu = a*c tokens in position order; slot e holds
// head ranges[me].begin + local[e]).
class HeadExchange {
 public:
  HeadExchange(comm::Communicator& group, const TokenOrder& order, const Shape& shape,
               const std::vector<HeadRange>& ranges, const std::vector<int64_t>& local)
      : group_(group), x_shape_(shape), pack_(shape[3]), unpack_(shape[3]) {
    const int a = group.size(), me = group.rank();
    const int64_t bx = shape[0], c = shape[1], hx = shape[2], tu = a * c;
    const int64_t n = static_cast<int64_t>(local.size()), mine = ranges[me].size();
    y_shape_ = {bx, tu, n, shape[3]};
    int64_t sent = 0, received = 0;  // rows of d so far in the send / receive buffers
    for (int j = 0; j < a; ++j) {
      const int64_t nj = ranges[j].size();
      for (int64_t bt = 0; bt < bx * c; ++bt) {
        pack_.add(sent + bt * nj, bt * hx + ranges[j].begin, nj);
      }
      send_rows_.push_back(bx * c * nj);
      sent += send_rows_.back();
      for (int64_t b = 0; b < bx; ++b) {
        for (int64_t t = 0; t < c; ++t) {
          for (int64_t e = 0; e < n; ++e) {
            unpack_.add((b * tu + order.slot[j][t]) * n + e,
                        received + (b * c + t) * mine + local[e], 1);
          }
        }
      }
      recv_rows_.push_back(bx * c * mine);
      received += recv_rows_.back();
    }
  }

  // x [Bx, c, Hx, d] -> y [Bx, Tu, n, d].
  [[nodiscard]] Tensor scatter(const Tensor& x) const {
    WEFT_CHECK(x.shape() == x_shape_) << shape_str(x.shape()) << " vs " << shape_str(x_shape_);
    Tensor send = rows(send_rows_, x, false);
    pack_.copy(x, send);
    Tensor recv = rows(recv_rows_, x, false);
    group_.all_to_all_v(send, send_rows_, recv, recv_rows_);
    Tensor y = Tensor::empty(y_shape_, x.dtype(), x.device());
    unpack_.copy(recv, y);
    return y;
  }

  // The transpose of scatter: y [Bx, Tu, n, d] -> x [Bx, c, Hx, d]; the copies of a head sent
  // to several ranks (or expanded to several slots) are summed.
  [[nodiscard]] Tensor gather(const Tensor& y) const {
    WEFT_CHECK(y.shape() == y_shape_) << shape_str(y.shape()) << " vs " << shape_str(y_shape_);
    Tensor back = rows(recv_rows_, y, true);
    unpack_.add_transposed(y, back);
    Tensor home = rows(send_rows_, y, false);
    group_.all_to_all_v(back, recv_rows_, home, send_rows_);
    Tensor x = Tensor::zeros(x_shape_, y.dtype(), y.device());
    pack_.add_transposed(home, x);
    return x;
  }

 private:
  // A [sum(counts), d] buffer like `like`.
  [[nodiscard]] Tensor rows(const std::vector<int64_t>& counts, const Tensor& like,
                            bool zero) const {
    const Shape shape{std::accumulate(counts.begin(), counts.end(), int64_t{0}), x_shape_[3]};
    return zero ? Tensor::zeros(shape, like.dtype(), like.device())
                : Tensor::empty(shape, like.dtype(), like.device());
  }

  comm::Communicator& group_;
  Shape x_shape_, y_shape_;
  RowMap pack_;    // send buffer rows <- x rows
  RowMap unpack_;  // y rows <- receive buffer rows
  std::vector<int64_t> send_rows_, recv_rows_;
};

class UlyssesRingAttention final : public SequenceParallelAttention {
 public:
  UlyssesRingAttention(comm::Communicator& group, const SpAttentionOptions& options, int a)
      : options_(options), a_(a), p_(group.size()), rank_(group.rank()) {
    const int g = p_ / a;
    // A level of one rank gets no communicator; a level spanning the group uses it as is.
    if (a > 1 && a == p_) {
      ulysses_ = &group;
    } else if (a > 1) {
      own_ulysses_ =
          group.split_within(rank_ / a, rank_ % a, absl::StrCat(group.name(), "_ulysses"));
      ulysses_ = own_ulysses_.get();
    }
    if (g > 1 && g == p_) {
      ring_ = &group;
    } else if (g > 1) {
      own_ring_ = group.split_within(rank_ % a, rank_ / a, absl::StrCat(group.name(), "_ring"));
      ring_ = own_ring_.get();
    }
    const int64_t kv_group = options.heads / options.kv_heads;
    q_heads_ = split_heads(options.heads, a);
    kv_heads_ = kv_heads_for(q_heads_, kv_group);
    q_slots_.resize(q_heads_[rank_ % a].size());
    std::iota(q_slots_.begin(), q_slots_.end(), 0);
    kv_slots_ = kv_slots(q_heads_[rank_ % a], kv_heads_[rank_ % a], kv_group);
  }

  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v,
                 std::unique_ptr<SpAttentionSaved>* saved) override {
    check_qkv(options_, q, k, v);
    const int64_t seq_len = q.dim(1) * p_;
    WEFT_CHECK(check_sp_split(options_.layout, seq_len, "sp attention").ok()) << seq_len;
    auto st = std::make_unique<Saved>();
    std::vector<TokenOrder> orders;  // one per ring rank (Ulysses group)
    for (int j = 0; j < p_ / a_; ++j) {
      orders.push_back(token_order(options_.layout, seq_len, j * a_, a_));
      st->ring.runs.push_back(orders.back().runs);
    }
    const Tensor kv = pack_kv(k, v);  // [2B, c, Hkv, d]
    if (ulysses_ != nullptr) {
      const TokenOrder& order = orders[rank_ / a_];
      st->qx.emplace(*ulysses_, order, q.shape(), q_heads_, q_slots_);
      st->kvx.emplace(*ulysses_, order, kv.shape(), kv_heads_, kv_slots_);
      st->ring.q = st->qx->scatter(q);     // [B, a*c, H_j, d]
      st->ring.kv = st->kvx->scatter(kv);  // [2B, a*c, slots, d]
    } else {
      st->ring.q = q;
      st->ring.kv = kv;
    }
    ring_forward(ring_, options_.scale, st->ring);
    Tensor o = ulysses_ != nullptr ? st->qx->gather(st->ring.o) : st->ring.o;
    if (saved != nullptr) *saved = std::move(st);
    return o;
  }

  void backward(SpAttentionSaved& saved, const Tensor& dout, Tensor& dq, Tensor& dk,
                Tensor& dv) override {
    Saved* st = &saved_as<Saved>(saved);
    const Tensor dout_u = ulysses_ != nullptr ? st->qx->scatter(dout) : dout;
    Tensor dq_u, dkv_u;
    ring_backward(ring_, options_.scale, st->ring, dout_u, dq_u, dkv_u);
    write_output(dq, ulysses_ != nullptr ? st->qx->gather(dq_u) : dq_u);
    unpack_kv(ulysses_ != nullptr ? st->kvx->gather(dkv_u) : dkv_u, dk, dv);
  }

 private:
  struct Saved final : SpAttentionSaved {
    RingState ring;
    std::optional<HeadExchange> qx, kvx;  // set when a > 1
  };

  SpAttentionOptions options_;
  int a_, p_, rank_;
  std::unique_ptr<comm::Communicator> own_ulysses_, own_ring_;
  comm::Communicator* ulysses_ = nullptr;      // null: a = 1, no exchange
  comm::Communicator* ring_ = nullptr;         // null: one ring rank
  std::vector<HeadRange> q_heads_, kv_heads_;  // per Ulysses member
  std::vector<int64_t> q_slots_, kv_slots_;    // this member's received-head slots
};

}  // namespace

std::unique_ptr<SequenceParallelAttention> make_ulysses_ring(comm::Communicator& group,
                                                             const SpAttentionOptions& options,
                                                             int ulysses) {
  return std::make_unique<UlyssesRingAttention>(group, options, ulysses);
}

}  // namespace weft::parallel::sp_detail
