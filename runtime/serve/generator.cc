#include "runtime/serve/generator.h"

#include "runtime/core/status.h"

namespace weft::serve {

absl::StatusOr<std::vector<int64_t>> generate(models::CausalLM& model,
                                              const std::vector<int64_t>& prompt,
                                              int64_t max_new_tokens,
                                              const SamplingOptions& sampling) {
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (max_new_tokens < 0) {
    return invalid_argument("--max-new-tokens ", max_new_tokens, " must be >= 0");
  }
  WEFT_RETURN_IF_ERROR(validate(sampling));
  const int64_t n = static_cast<int64_t>(prompt.size());
  Tensor tokens = Tensor::from_ints(prompt, {1, n});
  WEFT_RETURN_IF_ERROR(model.check_tokens(tokens));
  const int64_t vocab = model.config().vocab_size;
  Sampler sampler(sampling);
  std::unique_ptr<models::InferenceState> state = model.new_inference_state(1, n + max_new_tokens);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < max_new_tokens; ++i) {
    const Tensor logits = model.forward_incremental(*state, tokens).host();  // [1, t, V]
    const int64_t t = logits.dim(1);
    const int64_t next = sampler.next(logits.data<float>() + (t - 1) * vocab, vocab);
    out.push_back(next);
    tokens = Tensor::from_ints({next}, {1, 1});
  }
  return out;
}

}  // namespace weft::serve
