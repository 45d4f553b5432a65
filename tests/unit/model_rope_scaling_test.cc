// RoPE scaling's frequencies against transformers' formulas: tests/fixtures/rope/cases.json holds
// inv_freq and attention_factor computed in float32 the way modeling_rope_utils.py computes them
// (tests/fixtures/rope_scaling.py), for released models' settings (Llama 3.1, Qwen2.5 and
// DeepSeek YaRN, gpt-oss's untruncated YaRN, linear, dynamic) and the rope_* fixture models.
// Also: dynamic RoPE is plain RoPE up to max_position_embeddings, and a serving step gives each
// token its own request's length.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/rotary_embedding.h"
#include "runtime/io/file_util.h"
#include "tests/support/test_util.h"

namespace weft::models {
namespace {

using json = nlohmann::json;

RopeConfig rope_of(const json& config) {
  absl::StatusOr<io::ModelConfig> parsed = io::parse_model_config(config.dump());
  WEFT_CHECK(parsed.ok()) << parsed.status().message();
  return RopeConfig::of(*parsed);
}

TEST(RopeFrequencies, MatchTransformersInFloat32) {
  absl::StatusOr<std::string> text = io::read_file(testing::fixtures_dir() + "/rope/cases.json");
  ASSERT_TRUE(text.ok()) << text.status();
  const json cases = json::parse(*text);
  ASSERT_GE(cases.size(), 13u);
  for (const json& c : cases) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const RopeFrequencies got = rope_frequencies(rope_of(c["config"]), c["seq_len"].get<int64_t>());
    const std::vector<double> want = c["inv_freq"].get<std::vector<double>>();
    ASSERT_EQ(got.inv_freq.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      // powf against torch's pow: a few float32 ulps.
      EXPECT_NEAR(got.inv_freq[i], want[i], 1e-6 * want[i]) << "inv_freq[" << i << "]";
    }
    EXPECT_NEAR(got.attention_factor, c["attention_factor"].get<double>(), 1e-6);
  }
}

json dynamic_llama() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"vocab_size", 8},
          {"hidden_size", 64},
          {"intermediate_size", 8},
          {"num_hidden_layers", 1},
          {"num_attention_heads", 1},
          {"max_position_embeddings", 2048},
          {"rope_scaling", {{"rope_type", "dynamic"}, {"factor", 2.0}}}};
}

// transformers' dynamic RoPE keeps the initial frequencies until the sequence outgrows
// max_position_embeddings.
TEST(RopeFrequencies, DynamicIsPlainRopeUpToMaxPositions) {
  json plain = dynamic_llama();
  plain.erase("rope_scaling");
  const std::vector<float> base = rope_frequencies(rope_of(plain), 1).inv_freq;
  const RopeConfig dynamic = rope_of(dynamic_llama());
  EXPECT_EQ(rope_frequencies(dynamic, 1).inv_freq, base);
  EXPECT_EQ(rope_frequencies(dynamic, 2048).inv_freq, base);
  const std::vector<float> longer = rope_frequencies(dynamic, 2049).inv_freq;
  EXPECT_EQ(longer[0], 1.0f);             // the base's 0th power
  EXPECT_LT(longer.back(), base.back());  // a larger base: lower frequencies
}

TEST(RopeFrequencies, ServingStepGivesEachTokenItsRequestLength) {
  PagedBatch step;
  // Request 0 decodes at position 40; request 1 prefills positions 0..3; request 2 a chunk 8..9.
  step.positions = Tensor::from_ints({40, 0, 1, 2, 3, 8, 9}, {7});
  step.seq = Tensor::from_ints({0, 1, 1, 1, 1, 2, 2}, {7});
  EXPECT_EQ(request_lengths(step).to_ints(), (std::vector<int64_t>{41, 4, 4, 4, 4, 10, 10}));
}

}  // namespace
}  // namespace weft::models
