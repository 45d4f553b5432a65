// Choosing the next token from a row of logits: greedy, or seeded sampling with temperature
// and nucleus (top-p) truncation.
#pragma once

#include <cstdint>
#include <random>

#include "absl/status/status.h"

namespace weft::serve {

struct SamplingOptions {
  bool greedy = true;
  float temperature = 1.0f;  // > 0
  float top_p = 1.0f;        // in (0, 1]
  uint64_t seed = 0;
};

// Errors name the bad value ("--temperature 0 must be > 0").
absl::Status validate(const SamplingOptions& options);

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  // logits: `vocab` f32 values. Greedy: the first index of the maximum. Otherwise:
  // p = softmax(logits / temperature); keep the smallest prefix of tokens sorted by p
  // (descending, ties by index) whose mass reaches top_p; renormalise; draw.
  int64_t next(const float* logits, int64_t vocab);

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
};

}  // namespace weft::serve
