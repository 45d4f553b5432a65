#include "runtime/serve/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"

namespace weft::serve {

absl::Status validate(const SamplingOptions& options) {
  if (options.greedy) return absl::OkStatus();
  if (!(options.temperature > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--temperature ", options.temperature, " must be > 0"));
  }
  if (!(options.top_p > 0 && options.top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("--top-p ", options.top_p, " must be in (0, 1]"));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {}

int64_t Sampler::next(const float* logits, int64_t vocab) {
  if (options_.greedy) return std::max_element(logits, logits + vocab) - logits;
  const float max = *std::max_element(logits, logits + vocab);
  std::vector<double> p(vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    p[i] = std::exp((static_cast<double>(logits[i]) - max) / options_.temperature);
    sum += p[i];
  }
  std::vector<int64_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
  // Nucleus: the smallest prefix whose mass reaches top_p (always at least one token).
  double kept = 0;
  size_t keep = 0;
  while (keep < order.size() && (keep == 0 || kept < options_.top_p * sum)) kept += p[order[keep++]];
  std::uniform_real_distribution<double> uniform(0.0, kept);
  double target = uniform(rng_);
  for (size_t i = 0; i < keep; ++i) {
    target -= p[order[i]];
    if (target < 0) return order[i];
  }
  return order[keep - 1];
}

}  // namespace weft::serve
