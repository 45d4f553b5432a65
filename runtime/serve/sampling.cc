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
    return absl::InvalidArgumentError(
        absl::StrCat("--top-p ", options.top_p, " must be in (0, 1]"));
  }
  if (options.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k ", options.top_k, " must be >= 0"));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {}

int64_t Sampler::next(const float* logits, int64_t vocab) {
  if (options_.greedy) return std::max_element(logits, logits + vocab) - logits;
  const float max = *std::max_element(logits, logits + vocab);
  std::vector<double> p(vocab);
  for (int64_t i = 0; i < vocab; ++i) {
    p[i] = std::exp((static_cast<double>(logits[i]) - max) / options_.temperature);
  }
  std::vector<int64_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
  size_t candidates = order.size();
  if (options_.top_k > 0) candidates = std::min<size_t>(candidates, options_.top_k);
  double mass = 0;
  for (size_t i = 0; i < candidates; ++i) mass += p[order[i]];
  // Nucleus: the smallest prefix whose mass reaches top_p (always at least one token).
  double kept = 0;
  size_t keep = 0;
  while (keep < candidates && (keep == 0 || kept < options_.top_p * mass)) kept += p[order[keep++]];
  std::uniform_real_distribution<double> uniform(0.0, kept);
  double target = uniform(rng_);
  for (size_t i = 0; i < keep; ++i) {
    target -= p[order[i]];
    if (target < 0) return order[i];
  }
  return order[keep - 1];
}

TokenLogprobs token_logprobs(const float* logits, int64_t vocab, int64_t token, int top) {
  const float max = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  const double log_z = max + std::log(sum);
  TokenLogprobs out;
  out.logprob = static_cast<float>(logits[token] - log_z);
  if (top > 0) {
    std::vector<int64_t> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    const auto k = std::min<int64_t>(top, vocab);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int64_t i = 0; i < k; ++i) {
      out.top.emplace_back(order[i], static_cast<float>(logits[order[i]] - log_z));
    }
  }
  return out;
}

}  // namespace weft::serve
