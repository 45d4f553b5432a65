// The model family against the PyTorch fixtures (tests/fixtures/make_fixtures.py, computed in
// float64): logits, loss and every gradient within 1e-4 relative (our f32 against f64), for the
// four architectures and for a Llama with each rope_scaling type; incremental decoding equals
// the full forward (but under dynamic RoPE, which scales each call for its length: there it
// equals transformers' generate() with a KV cache); greedy generation equals the reference's.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "models/causal_lm.h"
#include "runtime/io/safetensors.h"
#include "tests/support/test_util.h"

namespace weft::models {
namespace {

using ::weft::testing::fixtures_dir;

struct Fixture {
  std::unique_ptr<CausalLM> model;
  std::shared_ptr<io::SafetensorsFile> reference;

  Tensor ref(const std::string& name) const {
    auto t = reference->get(name);
    WEFT_CHECK(t.ok()) << t.status().message();
    return t->dtype() == DType::kI64 ? *t : *reference->get_f32(name);
  }
};

Fixture load_fixture(const std::string& name) {
  const std::string dir = fixtures_dir() + "/models/" + name;
  auto model = CausalLM::from_pretrained(dir);
  WEFT_CHECK(model.ok()) << model.status().message();
  auto reference = io::SafetensorsFile::open(dir + "/reference.safetensors");
  WEFT_CHECK(reference.ok()) << reference.status().message();
  return {std::move(*model), std::move(*reference)};
}

// Columns [begin, end) of an i64 [B, T] token tensor.
Tensor token_columns(const Tensor& tokens, int64_t begin, int64_t end) {
  const int64_t b = tokens.dim(0), t = tokens.dim(1);
  const std::vector<int64_t> ids = tokens.to_ints();
  std::vector<int64_t> out;
  for (int64_t i = 0; i < b; ++i) {
    out.insert(out.end(), ids.begin() + i * t + begin, ids.begin() + i * t + end);
  }
  return Tensor::from_ints(out, {b, end - begin});
}

// Positions [begin, end) of f32 [B, T, V] logits.
Tensor logit_positions(const Tensor& logits, int64_t begin, int64_t end) {
  const int64_t b = logits.dim(0), t = logits.dim(1), v = logits.dim(2);
  const std::vector<float> x = logits.to_floats();
  std::vector<float> out;
  for (int64_t i = 0; i < b; ++i) {
    out.insert(out.end(), x.begin() + (i * t + begin) * v, x.begin() + (i * t + end) * v);
  }
  return Tensor::from_floats(out, {b, end - begin, v});
}

class ModelFamily : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelFamily, LogitsAndLossMatchPyTorch) {
  const Fixture f = load_fixture(GetParam());
  const Tensor tokens = f.ref("tokens");  // [2, T]
  const ForwardResult out = f.model->forward(tokens, {.keep_logits = true});
  EXPECT_TENSORS_CLOSE(out.logits, f.ref("logits"), 1e-4);
  EXPECT_EQ(out.predicted, 2 * (tokens.dim(1) - 1));
  const double loss = out.loss_sum / static_cast<double>(out.predicted);
  EXPECT_NEAR(loss, f.ref("loss").item(), 1e-4 * f.ref("loss").item());
}

TEST_P(ModelFamily, EveryGradientMatchesPyTorch) {
  const Fixture f = load_fixture(GetParam());
  const ForwardResult out = f.model->forward(f.ref("tokens"), {.for_backward = true});
  f.model->backward(1.0f / static_cast<float>(out.predicted));
  size_t reference_grads = 0;
  for (const std::string& name : f.reference->names()) {
    reference_grads += name.rfind("grad.", 0) == 0;
  }
  EXPECT_EQ(f.model->parameters().size(), reference_grads);
  for (const Param* p : f.model->parameters()) {
    SCOPED_TRACE(p->name);
    EXPECT_TENSORS_CLOSE(p->grad, f.ref("grad." + p->name), 1e-4);
  }
}

// A prompt of `prompt` tokens, then one token per call: the logits of every call against
// `expected` [2, T, V], within `tol`.
void expect_decoding_gives(const Fixture& f, int64_t prompt, const Tensor& expected, double tol) {
  const Tensor tokens = f.ref("tokens");  // [2, T]
  const int64_t t = tokens.dim(1);
  auto state = f.model->new_inference_state(tokens.dim(0), t);
  int64_t begin = 0;
  for (int64_t end = prompt; end <= t; begin = end, ++end) {
    SCOPED_TRACE(end);
    const Tensor logits = f.model->forward_incremental(*state, token_columns(tokens, begin, end));
    EXPECT_EQ(state->length(), end);
    EXPECT_TENSORS_CLOSE(logits, logit_positions(expected, begin, end), tol);
  }
}

class IncrementalDecoding : public ::testing::TestWithParam<std::string> {};

TEST_P(IncrementalDecoding, EqualsFullForward) {
  const Fixture f = load_fixture(GetParam());
  const Tensor full = f.model->forward(f.ref("tokens"), {.keep_logits = true}).logits;
  expect_decoding_gives(f, 5, full, 1e-5);
}

// transformers' generate() under dynamic RoPE: the prompt's forward scales for the prompt's
// length, each later token's for the length so far, and cached keys keep their rotation
// (decode.logits: the reference's forward with those per-position lengths).
TEST(DynamicRope, CachedDecodingMatchesTransformersGenerate) {
  const Fixture f = load_fixture("rope_dynamic");
  expect_decoding_gives(f, f.ref("decode.prompt_len").to_ints()[0], f.ref("decode.logits"), 1e-4);
}

class GreedyGeneration : public ::testing::TestWithParam<std::string> {};

TEST_P(GreedyGeneration, MatchesPyTorch) {
  const Fixture f = load_fixture(GetParam());
  const Tensor prompt = f.ref("generate.prompt");  // [5]
  const std::vector<int64_t> expected = f.ref("generate.greedy").to_ints();
  const auto new_tokens = static_cast<int64_t>(expected.size());
  auto state = f.model->new_inference_state(1, prompt.numel() + new_tokens);
  Tensor next = prompt.view({1, prompt.numel()});
  std::vector<int64_t> generated;
  for (int64_t i = 0; i < new_tokens; ++i) {
    const Tensor logits = f.model->forward_incremental(*state, next);  // [1, t, V]
    const std::vector<float> x = logits.to_floats();
    const int64_t v = logits.dim(2);
    const auto last = x.end() - v;
    generated.push_back(std::max_element(last, x.end()) - last);
    next = Tensor::from_ints({generated.back()}, {1, 1});
  }
  EXPECT_EQ(generated, expected);
}

std::string fixture_name(const ::testing::TestParamInfo<std::string>& info) { return info.param; }

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelFamily,
                         ::testing::Values("llama_gqa", "qwen2_tied", "mixtral_moe",
                                           "hybrid_linear", "rope_linear", "rope_dynamic",
                                           "rope_yarn", "rope_llama3"),
                         fixture_name);
INSTANTIATE_TEST_SUITE_P(Fixtures, IncrementalDecoding,
                         ::testing::Values("llama_gqa", "qwen2_tied", "mixtral_moe",
                                           "hybrid_linear", "rope_linear", "rope_yarn",
                                           "rope_llama3"),
                         fixture_name);
INSTANTIATE_TEST_SUITE_P(Fixtures, GreedyGeneration,
                         ::testing::Values("llama_gqa", "qwen2_tied", "mixtral_moe",
                                           "hybrid_linear"),
                         fixture_name);

}  // namespace
}  // namespace weft::models
