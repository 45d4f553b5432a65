// The data `weft train --data` reads (docs/architecture.md "Training data"): a stream of
// equal-length sequences that step s reads at positions [(s-1)*B, s*B), so that which sequences
// a step trains on is a function of the step alone, and a resumed run continues exactly.
//
// Two kinds: a token FILE (text, one sequence per line, read in file order; TokenFile below) and
// a directory prepared by `weft data prepare` (shuffled samples; indexed_token_data.h).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/core/tensor.h"

namespace weft::train {

class TokenDataset {
 public:
  virtual ~TokenDataset() = default;

  // Sequences per epoch.
  [[nodiscard]] virtual int64_t num_sequences() const = 0;
  [[nodiscard]] virtual int64_t seq_len() const = 0;
  // Largest id (for the vocabulary check before any work).
  [[nodiscard]] virtual int64_t max_id() const = 0;
  // The file or directory, for messages.
  [[nodiscard]] virtual const std::string& path() const = 0;
  // The seed of a shuffled order (recorded in checkpoints); none for file order.
  [[nodiscard]] virtual std::optional<uint64_t> shuffle_seed() const { return std::nullopt; }

  // Stream positions [first, first + count) as i64 [count, seq_len]. Position p is in epoch
  // p / num_sequences(); every epoch visits every sequence once.
  [[nodiscard]] virtual Tensor sequences(int64_t first, int64_t count) const = 0;
};

// `path` a directory: the prepared data in it (IndexedTokenData), cut into samples of `seq_len`
// and shuffled from `data_seed`. Otherwise a token FILE (seq_len and data_seed unused: the
// caller compares seq_len with the file's).
absl::StatusOr<std::unique_ptr<TokenDataset>> open_token_data(const std::string& path,
                                                              int64_t seq_len, uint64_t data_seed);

// A token FILE: text, one sequence per line, ids separated by spaces, all lines of equal length.
// Position p is line p % num_sequences (file order, every epoch).
class TokenFile : public TokenDataset {
 public:
  // Parses the whole file. Errors name the file, line and what is wrong (not a number, a line of
  // another length, an empty file).
  static absl::StatusOr<TokenFile> load(const std::string& path);

  [[nodiscard]] int64_t num_sequences() const override { return num_sequences_; }
  [[nodiscard]] int64_t seq_len() const override { return seq_len_; }
  [[nodiscard]] const std::string& path() const override { return path_; }
  [[nodiscard]] int64_t max_id() const override { return max_id_; }
  [[nodiscard]] Tensor sequences(int64_t first, int64_t count) const override;

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
