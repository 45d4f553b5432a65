// Ring attention (docs/algorithms.md "Ring attention"): blocks of attention between the local query
// runs and one block of key runs, merged by log-sum-exp, and the ring that passes the K/V blocks
// (forward and backward) and the dK/dV accumulators (backward) from rank r to r+1.
#include <algorithm>
#include <limits>

#include "kernels/ops.h"
#include "parallel/sp_attention_impl.h"

namespace weft::parallel::sp_detail {

namespace {

constexpr int kKvTag = 1;    // K/V blocks
constexpr int kGradTag = 2;  // dK/dV accumulators

// Calls fn(b, qr, kr, klen, causal) for every batch row and every pair of a query run and a key
// run that is not fully masked; klen keys of kr reach up to qr's last query, and causal says
// whether some of them lie after some query of qr.
template <typename Fn>
void for_each_pair(int64_t batch, const std::vector<Run>& q_runs, const std::vector<Run>& k_runs,
                   Fn fn) {
  for (const Run& qr : q_runs) {
    for (const Run& kr : k_runs) {
      const int64_t q_last = qr.start + qr.len - 1;
      if (kr.start > q_last) continue;
      const int64_t klen = std::min(kr.len, q_last - kr.start + 1);
      const bool causal = kr.start + klen - 1 > qr.start;
      for (int64_t b = 0; b < batch; ++b) fn(b, qr, kr, klen, causal);
    }
  }
}

// Passes equally shaped blocks around the ring: receives from rank-1 into one of two
// alternating buffers while the block in hand is sent to rank+1. The first block is never
// overwritten.
class RingPass {
 public:
  RingPass(comm::Communicator& ring, Tensor first, int tag)
      : ring_(ring), current_(std::move(first)), tag_(tag) {}

  [[nodiscard]] Tensor& current() { return current_; }
  void post_recv() {
    Tensor& buf = spare_[flip_];
    if (!buf.defined()) buf = Tensor::empty(current_.shape(), current_.dtype(), current_.device());
    recv_ = ring_.recv_async(buf, (ring_.rank() + ring_.size() - 1) % ring_.size(), tag_);
  }
  void post_send() { send_ = ring_.send_async(current_, (ring_.rank() + 1) % ring_.size(), tag_); }
  // Waits for both transfers; the received block becomes the one in hand.
  void advance() {
    recv_->wait();
    send_->wait();
    current_ = spare_[flip_];
    flip_ ^= 1;
  }

 private:
  comm::Communicator& ring_;
  Tensor current_;
  Tensor spare_[2];
  int flip_ = 0;
  int tag_;
  comm::WorkPtr recv_, send_;
};

int ring_size(const comm::Communicator* ring) { return ring ? ring->size() : 1; }
int ring_rank(const comm::Communicator* ring) { return ring ? ring->rank() : 0; }

}  // namespace

void attend_block(const Tensor& q, const std::vector<Run>& q_runs, const Tensor& kv,
                  const std::vector<Run>& k_runs, float scale, Tensor& o, Tensor& lse) {
  const int64_t batch = q.dim(0), heads = q.dim(2);
  for_each_pair(batch, q_runs, k_runs,
                [&](int64_t b, const Run& qr, const Run& kr, int64_t klen, bool causal) {
                  const Tensor qv = token_view(q, b, qr.local, qr.len);
                  Tensor o_b = Tensor::empty(qv.shape(), o.dtype(), o.device());  // [1,len,H,d]
                  Tensor lse_b = Tensor::empty({1, heads, qr.len}, DType::kF32, o.device());
                  kernels::attention_forward(qv, token_view(kv, b, kr.local, klen),
                                             token_view(kv, batch + b, kr.local, klen), scale,
                                             causal, qr.start, kr.start, o_b, lse_b);
                  Tensor ov = token_view(o, b, qr.local, qr.len);
                  Tensor lv = lse_view(lse, heads, b, qr);
                  kernels::attention_merge(ov, lv, o_b, lse_b);
                });
}

void attend_block_backward(const Tensor& q, const std::vector<Run>& q_runs, const Tensor& o,
                           const Tensor& lse, const Tensor& dout, const Tensor& kv,
                           const std::vector<Run>& k_runs, float scale, Tensor& dq, Tensor& dkv) {
  const int64_t batch = q.dim(0), heads = q.dim(2);
  for_each_pair(batch, q_runs, k_runs,
                [&](int64_t b, const Run& qr, const Run& kr, int64_t klen, bool causal) {
                  Tensor dqv = token_view(dq, b, qr.local, qr.len);
                  Tensor dk = token_view(dkv, b, kr.local, klen);
                  Tensor dv = token_view(dkv, batch + b, kr.local, klen);
                  kernels::attention_backward(
                      token_view(q, b, qr.local, qr.len), token_view(kv, b, kr.local, klen),
                      token_view(kv, batch + b, kr.local, klen), token_view(o, b, qr.local, qr.len),
                      lse_view(lse, heads, b, qr), token_view(dout, b, qr.local, qr.len), scale,
                      causal, qr.start, kr.start, dqv, dk, dv);
                });
}

void ring_forward(comm::Communicator* ring, float scale, RingState& s) {
  const int p = ring_size(ring), r = ring_rank(ring);
  init_output(s.q, s.o, s.lse);
  if (p == 1) {
    attend_block(s.q, s.runs[0], s.kv, s.runs[0], scale, s.o, s.lse);
    return;
  }
  RingPass kv(*ring, s.kv, kKvTag);
  for (int step = 0; step < p; ++step) {
    const bool more = step + 1 < p;
    if (more) {  // the next block's transfer overlaps this block's attention
      kv.post_recv();
      kv.post_send();
    }
    attend_block(s.q, s.runs[r], kv.current(), s.runs[(r - step + p) % p], scale, s.o, s.lse);
    if (more) kv.advance();
  }
}

void ring_backward(comm::Communicator* ring, float scale, const RingState& s, const Tensor& dout,
                   Tensor& dq, Tensor& dkv) {
  const int p = ring_size(ring), r = ring_rank(ring);
  dq = Tensor::zeros(s.q.shape(), s.q.dtype(), s.q.device());
  Tensor acc = Tensor::zeros(s.kv.shape(), s.kv.dtype(), s.kv.device());  // [2B,c,Hkv,d]
  if (p == 1) {
    attend_block_backward(s.q, s.runs[0], s.o, s.lse, dout, s.kv, s.runs[0], scale, dq, acc);
    dkv = acc;
    return;
  }
  RingPass kv(*ring, s.kv, kKvTag);
  RingPass grad(*ring, acc, kGradTag);  // the accumulator of the block in hand
  for (int step = 0; step < p; ++step) {
    const bool more = step + 1 < p;
    if (more) {
      kv.post_recv();
      kv.post_send();
    }
    attend_block_backward(s.q, s.runs[r], s.o, s.lse, dout, kv.current(),
                          s.runs[(r - step + p) % p], scale, dq, grad.current());
    // The accumulator's hop is posted only now: its receive cannot complete before the
    // neighbour's step ends, and a pending request keeps the comm thread polling beside this
    // step's compute. After the last step this hop takes each accumulator home to its owner.
    grad.post_recv();
    grad.post_send();
    if (more) kv.advance();
    grad.advance();
  }
  dkv = grad.current();
}

}  // namespace weft::parallel::sp_detail
