// Which layers each pipeline rank holds. With pp ranks and v virtual chunks per rank
// (interleaved 1F1B, Megatron 2021), the layers are cut into S = pp*v contiguous virtual stages
// as evenly as possible (the first L % S stages take one more layer); virtual stage s lives on
// pp rank s % pp as its chunk s / pp. Example, 8 layers, pp=2, v=2: stages [0,2) [2,4) [4,6)
// [6,8); rank 0 holds chunks {[0,2), [4,6)}, rank 1 holds {[2,4), [6,8)}.
#pragma once

#include <vector>

#include "absl/status/statusor.h"

namespace weft::parallel {

struct LayerRange {
  int first = 0;  // inclusive
  int last = 0;   // exclusive
  int virtual_stage = 0;
};

// The chunks of pp rank `pp_rank`, in chunk order. Error when a virtual stage would be empty
// ("--pp 4 x --pp-virtual 2 = 8 stages for 6 layers").
absl::StatusOr<std::vector<LayerRange>> stage_layers(int num_layers, int pp, int virtual_chunks,
                                                     int pp_rank);

}  // namespace weft::parallel
