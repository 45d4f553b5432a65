// Choosing the next token from a row of logits: greedy, or seeded sampling with temperature,
// top-k and nucleus (top-p) truncation; and the log-probabilities a client may ask for.
#pragma once

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace weft::serve {

struct SamplingOptions {
  bool greedy = true;
  float temperature = 1.0f;  // > 0
  float top_p = 1.0f;        // in (0, 1]
  int top_k = 0;             // keep the k most likely tokens first (0: all)
  uint64_t seed = 0;
};

// Errors name the bad value ("--temperature 0 must be > 0").
absl::Status validate(const SamplingOptions& options);

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  // logits: `vocab` f32 values. Greedy: the first index of the maximum. Otherwise:
  // p = softmax(logits / temperature); sort tokens by p (descending, ties by index); keep the
  // first top_k (when set), then the smallest prefix of those whose mass reaches top_p of the
  // kept mass; renormalise; draw.
  int64_t next(const float* logits, int64_t vocab);

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
};

// log softmax(logits)[token] (the model's own distribution, before temperature and truncation),
// and the `top` most likely tokens with theirs (descending, ties by index).
struct TokenLogprobs {
  float logprob = 0;
  std::vector<std::pair<int64_t, float>> top;
};
TokenLogprobs token_logprobs(const float* logits, int64_t vocab, int64_t token, int top);

}  // namespace weft::serve
