// A cost model of the sequence-parallel attention cores, for choosing one per batch
// (--sp-attn auto, --sp-linear auto). The predicted time of one rank's forward + backward is
//   time = alpha * messages + beta * bytes + gamma * flops
// with the bytes of docs/algorithms.md for each algorithm and the flops of the attention work one
// rank does. A message is one dependent hand-off: a communicator call (a collective, a ring hop, an
// All-Scan pass); the latencies MPI pays inside one call are small beside the call's own (measured
// on the 2-core test machine: ~5 us for a tiny all_reduce, ~170 us for a dependent hop through the
// comm threads). Ring attention posts each K/V transfer before computing on the block in hand, so a
// ring step costs max(compute, transfer); its dK/dV accumulator hops wait on the step's compute and
// are added. Ulysses and the all-gather core add communication and compute. LASP-2 and ZeCO overlap
// their state exchange with the intra-run kernel: max of the two per pass (ZeCO's second zigzag
// pass waits for the kernel: added). Which algorithm wins
// therefore depends on the measured link speed against the measured compute speed (the
// heterogeneity-adaptive idea): alpha, beta and gamma come from a short probe on the group, agreed
// by every rank so that every rank makes the same choice.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "parallel/sp_attention.h"
#include "parallel/sp_layout.h"
#include "parallel/sp_linear_attention.h"

namespace weft::parallel {

struct SpCostParams {
  double alpha = 0;  // seconds per message (a dependent hand-off; latency)
  double beta = 0;   // seconds per byte sent
  double gamma = 0;  // seconds per flop of attention work (as attention_flops counts them)
};

// "alpha,beta,gamma" (three non-negative numbers, e.g. "2e-6,1e-9,3e-11").
absl::StatusOr<SpCostParams> parse_sp_cost(const std::string& text);

// Collective over `group`. WEFT_SP_COST="alpha,beta,gamma" when set (a malformed value is an
// error naming it); otherwise a probe of ~0.1 s: a one-float token passed around the ring, each
// hop waiting for the one before (alpha), a 1 MiB send/recv around the ring (beta), a causal
// attention forward + backward on CPU, all ranks at once (gamma). Every rank ends with the
// element-wise maximum over the group, so all ranks hold the same parameters.
absl::StatusOr<SpCostParams> calibrate_sp_cost(comm::Communicator& group);

// One rank's share of one forward + backward and its predicted time. messages and bytes are what
// this rank sends (averaged over the ranks where they differ); flops its attention work.
struct SpCost {
  double messages = 0;
  double bytes = 0;
  double flops = 0;
  double seconds = 0;
};

// Flops of causal attention over `pairs` (query, key) pairs per head, for `heads` heads and head
// dim d, forward + backward: 4d per pair forward (Q K^T, P V), 10d backward (the recomputed
// scores and the four gradient products).
double attention_flops(double pairs, int64_t heads, int64_t d);

struct SpAttnShape {
  int64_t batch = 1;
  int64_t tokens = 0;  // c: tokens per rank (T = c * ranks)
  int64_t heads = 0, kv_heads = 0, dim = 0;
  int ranks = 1;
  int64_t elem_bytes = 4;
};

// ring, ulysses, usp (Ulysses groups of `ulysses`) and allgather under `layout` (the compute of
// the slowest rank: balanced under a zigzag at the ring level, (2P-1)/P of the mean when
// contiguous).
SpCost predict_sp_attention(SpAttnAlgo algo, const SpAttnShape& shape, const SpLayout& layout,
                            int ulysses, const SpCostParams& params);

struct SpLinearShape {
  int64_t batch = 1;
  int64_t tokens = 0;  // c: tokens per rank
  int64_t heads = 0, dim = 0;
  int ranks = 1;
  int64_t elem_bytes = 4;
};

// lasp2 and zeco (All-Scan pipelined in `scan_blocks` pieces) under `layout`.
SpCost predict_sp_linear(SpLinearAlgo algo, const SpLinearShape& shape, const SpLayout& layout,
                         int scan_blocks, const SpCostParams& params);

// The index of the least predicted time; a later candidate must beat the best so far by more than
// a relative 1e-9, so ties go to the earlier one (candidates are listed in order of preference).
size_t cheapest(const std::vector<SpCost>& costs);

}  // namespace weft::parallel
