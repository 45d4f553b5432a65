#include "models/token_batch.h"

#include <algorithm>
#include <map>
#include <vector>

namespace weft::models {

TokenBatch TokenBatch::make(int64_t batch, int64_t len, int64_t offset) {
  std::vector<int64_t> positions(len);
  for (int64_t t = 0; t < len; ++t) positions[t] = offset + t;
  return {batch, len, offset, Tensor::from_ints(positions, {len}).on(default_device())};
}

Tensor request_lengths(const PagedBatch& paged) {
  const std::vector<int64_t> seq = paged.seq.to_ints();
  const std::vector<int64_t> pos = paged.positions.to_ints();
  std::map<int64_t, int64_t> length;  // request row -> 1 + its largest position
  for (size_t i = 0; i < seq.size(); ++i) {
    length[seq[i]] = std::max(length[seq[i]], pos[i] + 1);
  }
  std::vector<int64_t> out(seq.size());
  for (size_t i = 0; i < seq.size(); ++i) out[i] = length[seq[i]];
  return Tensor::from_ints(out, {static_cast<int64_t>(out.size())}).on(default_device());
}

}  // namespace weft::models
