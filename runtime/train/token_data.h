// A token FILE (docs/architecture.md): text, one sequence per line, ids separated by spaces, all
// lines of equal length. Steps read lines in file order.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/core/tensor.h"

namespace weft::train {

class TokenFile {
 public:
  // Parses the whole file. Errors name the file, line and what is wrong (not a number, a line of
  // another length, an empty file).
  static absl::StatusOr<TokenFile> load(const std::string& path);

  [[nodiscard]] int64_t num_sequences() const { return num_sequences_; }
  [[nodiscard]] int64_t seq_len() const { return seq_len_; }
  [[nodiscard]] const std::string& path() const { return path_; }
  // Largest id in the file (for the vocabulary check before any work).
  [[nodiscard]] int64_t max_id() const { return max_id_; }

  // Sequences [first, first + count) as i64 [count, seq_len]; indices wrap around the end of the
  // file (a new epoch starts from line 0).
  [[nodiscard]] Tensor sequences(int64_t first, int64_t count) const;

 private:
  std::string path_;
  std::vector<int64_t> ids_;  // [num_sequences * seq_len]
  int64_t num_sequences_ = 0;
  int64_t seq_len_ = 0;
  int64_t max_id_ = -1;
};

// The contiguous share [begin, end) of `total` items that part `index` of `parts` takes: the
// first total % parts parts take one more (so the split is as even as it can be).
struct Range {
  int64_t begin = 0;
  int64_t end = 0;
  [[nodiscard]] int64_t size() const { return end - begin; }
};
Range split_evenly(int64_t total, int parts, int index);

}  // namespace weft::train
