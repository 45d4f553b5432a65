// `weft train --data DIR`: the prepared data of `weft data prepare` (runtime/io/indexed_tokens.h)
// as training samples in a shuffled order (docs/architecture.md "Training data").
//
// Samples: the concatenated ids (documents separated by their EOS) cut into windows of T =
// seq_len ids that overlap by one, so that every id after the first is a prediction target
// exactly once per epoch (Megatron's samples of seq_length + 1 ids):
//   sample i = ids [i*(T-1), i*(T-1) + T),  0 <= i < N = (num_tokens - 1) / (T - 1)
// and the ids after the last whole window are not used. A window may span documents; attention
// is not masked at document boundaries.
//
// Order: stream position p is in epoch e = p / N and reads sample order_e[p % N], where order_e
// = shuffled_order(N, data_seed + e). The batch of step s is therefore a function of (data_seed,
// s) alone, on any mesh, and a run resumed at step s reads what the uninterrupted run read.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/io/indexed_tokens.h"
#include "runtime/train/token_data.h"

namespace weft::train {

// A permutation of [0, n) from `seed`: Fisher-Yates over std::mt19937_64 (whose output the C++
// standard fixes) with unbiased bounded draws by rejection, so it is the same on every platform
// and standard library (std::uniform_int_distribution is not).
std::vector<int64_t> shuffled_order(int64_t n, uint64_t seed);

class IndexedTokenData : public TokenDataset {
 public:
  // Opens DIR (io::IndexedTokens::open: sizes and offsets are checked, the ids are not read;
  // `weft data verify DIR` checks the checksums). Errors: seq_len < 2, or fewer than seq_len ids.
  static absl::StatusOr<std::unique_ptr<IndexedTokenData>> open(const std::string& dir,
                                                                int64_t seq_len,
                                                                uint64_t data_seed);

  [[nodiscard]] int64_t num_sequences() const override { return num_samples_; }
  [[nodiscard]] int64_t seq_len() const override { return seq_len_; }
  [[nodiscard]] int64_t max_id() const override { return tokens_.index().max_id; }
  [[nodiscard]] const std::string& path() const override { return tokens_.dir(); }
  [[nodiscard]] std::optional<uint64_t> shuffle_seed() const override { return seed_; }
  // Ids read are checked against the index's max_id: an id above it (a tokens.bin damaged after
  // it was prepared, with its size intact) stops the process with a message naming the file.
  [[nodiscard]] Tensor sequences(int64_t first, int64_t count) const override;

  // The samples of epoch e in visiting order.
  [[nodiscard]] const std::vector<int64_t>& epoch_order(int64_t epoch) const;

 private:
  IndexedTokenData(io::IndexedTokens tokens, int64_t seq_len, uint64_t seed);

  io::IndexedTokens tokens_;
  int64_t seq_len_;
  uint64_t seed_;
  int64_t num_samples_;
  // The last epoch's order, kept: consecutive steps read the same epoch.
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_order_;
};

}  // namespace weft::train
