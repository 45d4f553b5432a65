#include "parallel/pipeline_layout.h"

#include "absl/strings/str_cat.h"

namespace weft::parallel {

absl::StatusOr<std::vector<LayerRange>> stage_layers(int num_layers, int pp, int virtual_chunks,
                                                     int pp_rank) {
  const int stages = pp * virtual_chunks;
  if (pp < 1 || virtual_chunks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--pp ", pp, " and --pp-virtual ", virtual_chunks, " must be >= 1"));
  }
  if (stages > num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("--pp ", pp, " x --pp-virtual ", virtual_chunks,
                                                   " = ", stages, " pipeline stages for ",
                                                   num_layers, " layers: a stage would be empty"));
  }
  const int base = num_layers / stages;
  const int extra = num_layers % stages;
  std::vector<LayerRange> chunks;
  for (int s = pp_rank; s < stages; s += pp) {
    LayerRange r;
    r.first = s * base + std::min(s, extra);
    r.last = r.first + base + (s < extra ? 1 : 0);
    r.virtual_stage = s;
    chunks.push_back(r);
  }
  return chunks;
}

}  // namespace weft::parallel
