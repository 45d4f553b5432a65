// Where this rank sits in the MoE view of its pipeline stage (MoE Parallel Folding,
// docs/algorithms.md "Expert parallelism"): the stage's tp*sp*dp ranks are viewed again as
// etp x ep x edp. Each ep rank hosts E/ep experts (which ones: the placement), each of them split
// by features over etp; edp ranks hold copies of the same experts.
//
// Without --ep and --etp (both 1) MoE layers keep Megatron's plain layout: every expert split
// by features over tp, the tokens replicated over tp (no dispatch).
#pragma once

#include <cstdint>
#include <vector>

#include "comm/communicator.h"

namespace weft::models {

struct ExpertContext {
  int ep = 1;
  int ep_rank = 0;
  comm::Communicator* ep_group = nullptr;  // null when ep == 1
  int etp = 1;
  int etp_rank = 0;
  comm::Communicator* etp_group = nullptr;  // null when etp == 1
  int edp_rank = 0;
  // Per-sequence expert capacity: each expert takes at most ceil(F * T * k / E) of a sequence's
  // T*k choices, earliest positions first; 0 = dropless.
  double capacity_factor = 0;
  // Per decoder layer: placement[layer][r * E/ep + j] = the j-th expert hosted by ep rank r.
  // Empty (or an empty entry): expert e on rank e / (E/ep) (contiguous blocks).
  std::vector<std::vector<int64_t>> placement;
  // Speculative MoE (--speculative-moe): one row per (token, destination rank) instead of one
  // per choice, and, where the tp ranks share the rows, each token routed by the tp rank whose
  // ep rank hosts most of its experts. tp_ep[t] = the ep rank of tp rank t.
  bool speculative = false;
  std::vector<int> tp_ep;
  // The groups whose ranks hold different tokens of one micro-batch (the stage's tp x sp, then
  // dp): the load-balancing loss's statistics are summed over them. Empty on one rank.
  std::vector<comm::Communicator*> token_groups;

  // Whether MoE layers dispatch tokens to their experts' ranks (ep or etp above one).
  [[nodiscard]] bool dispatches() const { return ep * etp > 1; }
  // Layer `layer`'s placement (identity when none was given).
  [[nodiscard]] std::vector<int64_t> placement_of(int64_t layer, int64_t num_experts) const {
    if (layer < static_cast<int64_t>(placement.size()) && !placement[layer].empty()) {
      return placement[layer];
    }
    std::vector<int64_t> identity(num_experts);
    for (int64_t e = 0; e < num_experts; ++e) identity[e] = e;
    return identity;
  }
};

}  // namespace weft::models
