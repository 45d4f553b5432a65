// Which positions of a sequence each rank of a sequence-parallel (sp) group holds
// (docs/algorithms.md "Ring attention", "Ulysses"). A sequence of T tokens over P ranks, c = T / P
// tokens per rank. The P ranks form g groups of P/g consecutive ranks; the sequence is cut into
// 2g chunks of T/(2g); group j holds chunks j and 2g-1-j (the zigzag), and its members split
// those T/g tokens contiguously, c each, in increasing position order:
//   g = 1:  contiguous layout, rank r holds [r*c, (r+1)*c)
//   g = P:  zigzag over ranks (ring attention), rank r holds chunks r and 2P-1-r
//   g = P/a: zigzag over the ring level of USP (Ulysses groups of a inside)
// A rank's local tokens are in increasing position order and form at most two runs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace weft::parallel {

struct SpLayout {
  int ranks = 1;   // P
  int groups = 1;  // g: 1 contiguous, P zigzag over ranks

  [[nodiscard]] bool contiguous() const { return groups == 1; }
  // T must be a multiple of this: 2g (zigzag chunks) and P.
  [[nodiscard]] int64_t multiple() const;
  // The global positions `rank` holds, in local order ([c] values).
  [[nodiscard]] std::vector<int64_t> positions(int64_t seq_len, int rank) const;

  // A maximal run of consecutive positions among a rank's local tokens.
  struct Run {
    int64_t local = 0;  // first local index
    int64_t start = 0;  // its global position
    int64_t len = 0;
  };
  [[nodiscard]] std::vector<Run> runs(int64_t seq_len, int rank) const;
};

// Ok when `layout` can split seq_len; otherwise an error naming the length, the sp degree and
// the multiple needed (`what` names the algorithm, e.g. "--sp-attn ring").
absl::Status check_sp_split(const SpLayout& layout, int64_t seq_len, const std::string& what);

}  // namespace weft::parallel
