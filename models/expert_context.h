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
  // placement[r * E/ep + j] = the j-th expert hosted by ep rank r. Empty: expert e on rank
  // e / (E/ep) (contiguous blocks).
  std::vector<int64_t> placement;

  // Whether MoE layers dispatch tokens to their experts' ranks (ep or etp above one).
  [[nodiscard]] bool dispatches() const { return ep * etp > 1; }
};

}  // namespace weft::models
