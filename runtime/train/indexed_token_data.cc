#include "runtime/train/indexed_token_data.h"

#include <numeric>
#include <random>

#include "runtime/core/check.h"
#include "runtime/core/status.h"

namespace weft::train {
namespace {

// Uniform in [0, range): draws below 2^64 mod range are rejected so every value is equally
// likely (the arc4random_uniform method).
uint64_t bounded(std::mt19937_64& rng, uint64_t range) {
  const uint64_t threshold = (0 - range) % range;
  uint64_t x = rng();
  while (x < threshold) x = rng();
  return x % range;
}

}  // namespace

std::vector<int64_t> shuffled_order(int64_t n, uint64_t seed) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), int64_t{0});
  std::mt19937_64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    std::swap(order[i], order[bounded(rng, static_cast<uint64_t>(i) + 1)]);
  }
  return order;
}

IndexedTokenData::IndexedTokenData(io::IndexedTokens tokens, int64_t seq_len, uint64_t seed)
    : tokens_(std::move(tokens)),
      seq_len_(seq_len),
      seed_(seed),
      num_samples_((tokens_.index().num_tokens - 1) / (seq_len - 1)) {}

absl::StatusOr<std::unique_ptr<IndexedTokenData>> IndexedTokenData::open(const std::string& dir,
                                                                         int64_t seq_len,
                                                                         uint64_t data_seed) {
  if (seq_len < 2) return invalid_argument("--seq-len ", seq_len, " must be at least 2");
  WEFT_ASSIGN_OR_RETURN(io::IndexedTokens tokens, io::IndexedTokens::open(dir));
  if (tokens.index().num_tokens < seq_len) {
    return invalid_argument("--seq-len ", seq_len, " is longer than the data in ", dir,
                            ", which holds ", tokens.index().num_tokens, " tokens");
  }
  return std::unique_ptr<IndexedTokenData>(
      new IndexedTokenData(std::move(tokens), seq_len, data_seed));
}

const std::vector<int64_t>& IndexedTokenData::epoch_order(int64_t epoch) const {
  if (epoch != cached_epoch_) {
    cached_order_ = shuffled_order(num_samples_, seed_ + static_cast<uint64_t>(epoch));
    cached_epoch_ = epoch;
  }
  return cached_order_;
}

Tensor IndexedTokenData::sequences(int64_t first, int64_t count) const {
  Tensor out = Tensor::empty({count, seq_len_}, DType::kI64, Device::cpu());  // [count, T]
  int64_t* dst = out.data<int64_t>();
  for (int64_t i = 0; i < count; ++i) {
    const int64_t position = first + i;
    const int64_t sample = epoch_order(position / num_samples_)[position % num_samples_];
    const int64_t start = sample * (seq_len_ - 1);
    const int64_t max_id = tokens_.read(start, seq_len_, dst + i * seq_len_);
    WEFT_CHECK(max_id <= tokens_.index().max_id)
        << tokens_.tokens_path() << ": id " << max_id << " in tokens [" << start << ", "
        << start + seq_len_ << ") is above the index's max_id " << tokens_.index().max_id
        << ": the file is damaged (weft data verify " << tokens_.dir() << ")";
  }
  return out;
}

}  // namespace weft::train
