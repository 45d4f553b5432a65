// Fault injection for failure drills (docs/operations.md, "Failure detection"). Off unless its
// environment variable is set; reads it once.
//   WEFT_FAULT_STALL=RANK:STEP  training rank RANK (world) stops making progress at the start of
//                               step STEP: it sleeps forever with its threads alive (heartbeats
//                               go on), as a rank stuck in a kernel or a deadlock would.
//   WEFT_FAULT_FAIL=RANK:STEP   training rank RANK returns an error at the start of step STEP
//                               that the other ranks do not see (as a local I/O error would).
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace weft {

// Never returns when WEFT_FAULT_STALL names this rank and step.
void maybe_stall(int world_rank, int64_t step);
// An error when WEFT_FAULT_FAIL names this rank and step.
absl::Status maybe_fail(int world_rank, int64_t step);

}  // namespace weft
