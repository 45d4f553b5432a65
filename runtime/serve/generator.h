// Autoregressive generation over a CausalLM's incremental (KV-cached) forward.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "models/causal_lm.h"
#include "runtime/serve/sampling.h"

namespace weft::serve {

// Feeds `prompt` once, then one token at a time; returns the `max_new_tokens` new ids.
// Errors: an empty prompt, or a prompt id outside the vocabulary.
absl::StatusOr<std::vector<int64_t>> generate(models::CausalLM& model,
                                              const std::vector<int64_t>& prompt,
                                              int64_t max_new_tokens,
                                              const SamplingOptions& sampling);

}  // namespace weft::serve
