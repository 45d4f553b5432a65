// The cost model of the sequence-parallel attention cores (sp_cost_model.h): message, byte and
// flop counts per algorithm (docs/algorithms.md "Ring attention", "Ulysses", "LASP-2", "ZeCO and
// All-Scan"), and the probe that measures alpha, beta and gamma on the group.
#include "parallel/sp_cost_model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "kernels/ops.h"
#include "runtime/core/check.h"
#include "runtime/core/clock.h"
#include "runtime/core/status.h"

namespace weft::parallel {

namespace {

constexpr double kFwdFlopsPerPair = 4;   // x d: Q K^T and P V
constexpr double kBwdFlopsPerPair = 10;  // x d: scores again, dP, dS K, dS^T Q, P^T dO
constexpr int64_t kLinearChunk = 64;     // the chunk of the linear attention kernel

// ---- softmax attention ----------------------------------------------------------------------

// Query heads, and K/V head slots after the exchange, of the busiest member of a Ulysses group of
// `a` (the even split of sp_ulysses_attention.cc: the first H % a members get one more head; a
// member's KV heads are those its query heads read, expanded to one per query head when they do
// not line up); kv_sum is the KV heads summed over the members (what the all-to-all delivers).
struct UlyssesHeads {
  int64_t q = 0, slots = 0, kv_sum = 0;
};

UlyssesHeads ulysses_heads(int64_t heads, int64_t kv_heads, int a) {
  const int64_t group = heads / kv_heads;
  UlyssesHeads out;
  int64_t begin = 0;
  for (int j = 0; j < a; ++j) {
    const int64_t n = heads / a + (j < heads % a ? 1 : 0);
    const int64_t kv = (begin + n - 1) / group - begin / group + 1;
    out.q = std::max(out.q, n);
    out.slots = std::max(out.slots, n % kv == 0 ? kv : n);
    out.kv_sum += kv;
    begin += n;
  }
  return out;
}

// Ulysses inside groups of a, the ring across r = P / a groups (ring: a = 1, Ulysses: a = P).
SpCost ulysses_ring_cost(const SpAttnShape& s, const SpLayout& layout, int a,
                         const SpCostParams& c) {
  const int r = s.ranks / a;
  const UlyssesHeads h = ulysses_heads(s.heads, s.kv_heads, a);
  const double head_bytes = static_cast<double>(s.batch * s.tokens * s.dim * s.elem_bytes);
  SpCost cost;
  double serial = 0;  // seconds nothing overlaps
  if (a > 1) {
    // Per all-to-all: (a-1)/a of q (o, dout, dq); K and V of the heads the others read.
    const double qx = head_bytes * static_cast<double>(s.heads) * (a - 1) / a;
    const double kvx = 2 * head_bytes * static_cast<double>(h.kv_sum) * (a - 1) / a;
    cost.messages += 6;  // q, kv, o forward; dout, dq, dkv backward
    cost.bytes += 2 * (2 * qx + kvx);
    serial += c.alpha * 6 + c.beta * 2 * (2 * qx + kvx);
  }
  // Each ring member holds ca tokens of h.q query heads; a zigzag at the ring level gives every
  // step ca^2/2 (query, key) pairs, the contiguous layout ca^2 on the busiest rank after step 0.
  const double ca = static_cast<double>(a * s.tokens);
  const bool zigzag = r == 1 || layout.groups == r;
  const double first = ca * ca / 2, later = zigzag ? ca * ca / 2 : ca * ca;
  const double per_pair = static_cast<double>(s.batch * h.q * s.dim);
  auto step_seconds = [&](double pairs, double flops_per_pair) {
    return c.gamma * pairs * per_pair * flops_per_pair;
  };
  cost.flops = attention_flops(first + (r - 1) * later, h.q, s.dim) * s.batch;
  const double block = 2 * head_bytes * static_cast<double>(a * h.slots);  // K and V, ca tokens
  const double hop = c.alpha + c.beta * block;
  // Forward and backward, steps 0..r-2 overlap the next block's transfer: max(compute, hop)
  // each; step r-1 has no transfer; the dK/dV accumulators' r hops each wait for a step's end.
  auto overlapped = [&](double pairs) {
    return std::max(step_seconds(pairs, kFwdFlopsPerPair), hop) +
           std::max(step_seconds(pairs, kBwdFlopsPerPair), hop);
  };
  const double last = step_seconds(r == 1 ? first : later, kFwdFlopsPerPair + kBwdFlopsPerPair);
  double ring = last;
  if (r > 1) {
    ring += overlapped(first) + (r - 2) * overlapped(later) + r * hop;
    cost.messages += 3.0 * r - 2;
    cost.bytes += (3.0 * r - 2) * block;
  }
  cost.seconds = serial + ring;
  return cost;
}

// All-gather of K and V, local attention with the causal offsets, reduce-scatter of dK and dV.
SpCost allgather_cost(const SpAttnShape& s, const SpLayout& layout, const SpCostParams& c) {
  const int p = s.ranks;
  const double tokens = static_cast<double>(s.tokens), seq = tokens * p;
  // Zigzag over the ranks: T^2/(2P) pairs each; otherwise the busiest (last) rank's c(T - c/2).
  const double pairs = layout.groups == p ? seq * seq / (2 * p) : tokens * (seq - tokens / 2);
  SpCost cost;
  cost.flops = attention_flops(pairs, s.heads, s.dim) * s.batch;
  const double block = 2.0 * s.batch * s.tokens * s.kv_heads * s.dim * s.elem_bytes;
  cost.messages = p > 1 ? 2 : 0;  // the all-gather and the reduce-scatter
  cost.bytes = 2.0 * (p - 1) * block;
  cost.seconds = c.alpha * cost.messages + c.beta * cost.bytes + c.gamma * cost.flops;
  return cost;
}

// ---- linear attention -----------------------------------------------------------------------

// One pass (forward or backward) of the state exchange.
struct Exchange {
  double messages = 0, bytes = 0;
  double seconds = 0;         // in flight while the intra-run kernel computes
  double serial_seconds = 0;  // started only once the kernel is done
  double serial_flops = 0;    // work on the exchanged states after it completes
};

Exchange lasp2_pass(const SpLinearShape& s, int slots, double state_bytes, const SpCostParams& c) {
  const int p = s.ranks;
  Exchange x;
  x.messages = p > 1 ? 1 : 0;
  x.bytes = (p - 1) * slots * state_bytes;
  x.seconds = c.alpha * x.messages + c.beta * x.bytes;
  x.serial_flops = 2.0 * p * slots * state_bytes / 4;  // the decayed prefix over every state
  return x;
}

Exchange zeco_pass(const SpLinearShape& s, int passes, int blocks, double state_bytes,
                   const SpCostParams& c) {
  const int p = s.ranks;
  Exchange x;
  if (p == 1) return x;
  // Per All-Scan: one call; each rank but the last sends its state in `blocks` pieces, a piece
  // crossing the P-1 hops behind the one before it, so the scan ends after (blocks + P - 2) piece
  // transfers (inside the comm thread's one operation: no hand-off each). The zigzag's second
  // pass starts at the bridging rank P-1 from what the first brought, issued once its kernel is
  // done: it does not overlap.
  const double pass = c.alpha + (blocks + p - 2.0) * c.beta * state_bytes / blocks;
  x.messages = passes;
  x.bytes = passes * state_bytes * (p - 1.0) / p;
  x.seconds = pass;
  x.serial_seconds = (passes - 1) * pass;
  return x;
}

}  // namespace

absl::StatusOr<SpCostParams> parse_sp_cost(const std::string& text) {
  const std::vector<std::string> parts = absl::StrSplit(text, ',');
  double v[3];
  bool ok = parts.size() == 3;
  for (size_t i = 0; ok && i < 3; ++i) {
    ok = absl::SimpleAtod(parts[i], &v[i]) && std::isfinite(v[i]) && v[i] >= 0;
  }
  if (!ok) {
    return invalid_argument("WEFT_SP_COST '", text,
                            "' is not three non-negative numbers alpha,beta,gamma ",
                            "(seconds per message, per byte, per flop)");
  }
  return SpCostParams{v[0], v[1], v[2]};
}

double attention_flops(double pairs, int64_t heads, int64_t d) {
  return pairs * static_cast<double>(heads * d) * (kFwdFlopsPerPair + kBwdFlopsPerPair);
}

SpCost predict_sp_attention(SpAttnAlgo algo, const SpAttnShape& shape, const SpLayout& layout,
                            int ulysses, const SpCostParams& params) {
  switch (algo) {
    case SpAttnAlgo::kRing:
      return ulysses_ring_cost(shape, layout, 1, params);
    case SpAttnAlgo::kUlysses:
      return ulysses_ring_cost(shape, layout, shape.ranks, params);
    case SpAttnAlgo::kUsp:
      return ulysses_ring_cost(shape, layout, ulysses, params);
    case SpAttnAlgo::kAllGather:
      return allgather_cost(shape, layout, params);
    case SpAttnAlgo::kAuto:
      break;
  }
  WEFT_CHECK(false) << "auto is a choice among algorithms, not one to predict";
  return {};
}

SpCost predict_sp_linear(SpLinearAlgo algo, const SpLinearShape& s, const SpLayout& layout,
                         int scan_blocks, const SpCostParams& c) {
  WEFT_CHECK(algo != SpLinearAlgo::kAuto) << "auto is a choice among algorithms";
  const double state_bytes = 4.0 * s.batch * s.heads * s.dim * s.dim;  // f32 [B, H, d, d]
  const int runs = layout.contiguous() ? 1 : 2;
  const Exchange x = algo == SpLinearAlgo::kLasp2 ? lasp2_pass(s, runs, state_bytes, c)
                                                  : zeco_pass(s, runs, scan_blocks, state_bytes, c);
  // Per token and head: the chunked kernel (overlapping the exchange), then the state terms
  // around it (the local state and the carried-state products).
  const double rows = static_cast<double>(s.batch * s.tokens * s.heads);
  const double d = static_cast<double>(s.dim), chunk = kLinearChunk;
  const double kernel_fwd = rows * (4 * chunk * d + 4 * d * d), around_fwd = rows * 4 * d * d;
  const double kernel_bwd = 2 * kernel_fwd, around_bwd = rows * 6 * d * d;
  SpCost cost;
  cost.messages = 2 * x.messages;
  cost.bytes = 2 * x.bytes;
  cost.flops = kernel_fwd + around_fwd + kernel_bwd + around_bwd + 2 * x.serial_flops;
  cost.seconds = std::max(c.gamma * kernel_fwd, x.seconds) +
                 std::max(c.gamma * kernel_bwd, x.seconds) + 2 * x.serial_seconds +
                 c.gamma * (around_fwd + around_bwd + 2 * x.serial_flops);
  return cost;
}

size_t cheapest(const std::vector<SpCost>& costs) {
  WEFT_CHECK(!costs.empty());
  size_t best = 0;
  for (size_t i = 1; i < costs.size(); ++i) {
    if (costs[i].seconds < costs[best].seconds * (1 - 1e-9)) best = i;
  }
  return best;
}

// ---- calibration ----------------------------------------------------------------------------

namespace {

// Median seconds of `repeats` calls of fn after one unmeasured call.
double median_seconds(int repeats, const std::function<void()>& fn) {
  fn();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto start = SteadyClock::now();
    fn();
    t.push_back(seconds_since(start));
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

SpCostParams probe(comm::Communicator& group) {
  SpCostParams p;
  const int n = group.size(), r = group.rank();
  if (n > 1) {
    // alpha: a one-float token passed around the ring, each hop waiting for the one before (as
    // ring attention's hops do): `passes` x P dependent messages.
    Tensor token = Tensor::zeros({1});
    const int passes = 4;
    p.alpha = median_seconds(5,
                             [&] {
                               for (int i = 0; i < passes; ++i) {
                                 if (r != 0) group.recv(token, r - 1, 7);
                                 group.send(token, (r + 1) % n, 7);
                                 if (r == 0) group.recv(token, n - 1, 7);
                               }
                             }) /
              (passes * n);
    const int64_t floats = int64_t{1} << 18;  // 1 MiB
    const Tensor out = Tensor::zeros({floats});
    Tensor in = Tensor::empty({floats});
    const double ring = median_seconds(5, [&] {
      comm::WorkPtr recv = group.recv_async(in, (r + n - 1) % n, 7);
      group.send_async(out, (r + 1) % n, 7)->wait();
      recv->wait();
    });
    p.beta = std::max(ring - p.alpha, 0.0) / static_cast<double>(floats * 4);
  }
  // gamma: the kernel the model counts, long enough (tens of ms) to see the ranks that share a
  // core; all ranks at once.
  group.barrier();
  const int64_t t = 512, heads = 4, d = 64;
  const Tensor q = Tensor::full({1, t, heads, d}, 0.01f);
  Tensor o = Tensor::empty(q.shape()), lse = Tensor::empty({1, heads, t});
  Tensor dq = Tensor::zeros(q.shape()), dk = Tensor::zeros(q.shape()),
         dv = Tensor::zeros(q.shape());
  const double seconds = median_seconds(3, [&] {
    kernels::attention_forward(q, q, q, 0.125f, true, 0, 0, o, lse);
    kernels::attention_backward(q, q, q, o, lse, q, 0.125f, true, 0, 0, dq, dk, dv);
    // On a GPU the kernels only launch: a copy of the last output back waits for them (free on
    // the host, where host() is the tensor itself).
    (void)dv.view({-1}).slice(0, 1).host();
  });
  p.gamma = seconds / attention_flops(t * (t + 1) / 2.0, heads, d);
  return p;
}

}  // namespace

absl::StatusOr<SpCostParams> calibrate_sp_cost(comm::Communicator& group) {
  absl::StatusOr<SpCostParams> p = SpCostParams{};
  if (const char* env = std::getenv("WEFT_SP_COST"); env != nullptr) {
    p = parse_sp_cost(env);
  } else {
    p = probe(group);
  }
  // Every rank must choose the same algorithm: agree on one set of parameters (and on failing
  // together, so that no rank waits in a collective the others left).
  const SpCostParams mine = p.ok() ? *p : SpCostParams{};
  Tensor agreed =
      Tensor::from_floats({static_cast<float>(mine.alpha), static_cast<float>(mine.beta),
                           static_cast<float>(mine.gamma), p.ok() ? 0.0f : 1.0f},
                          {4});
  group.all_reduce(agreed, comm::ReduceOp::kMax);
  const std::vector<float> v = agreed.to_floats();
  if (!p.ok()) return p.status();
  if (v[3] > 0) return invalid_argument("WEFT_SP_COST is malformed on another rank of the group");
  return SpCostParams{v[0], v[1], v[2]};
}

}  // namespace weft::parallel
