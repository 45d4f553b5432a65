// Loading a model directory, and refusing bad input with a message that names the problem.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "models/causal_lm.h"
#include "tests/support/test_util.h"

namespace weft::models {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::weft::testing::fixtures_dir;
using ::weft::testing::make_temp_dir;

// A copy of fixture `name` whose config.json has `from` replaced by `to`.
std::string copy_with_config_edit(const std::string& name, const std::string& from,
                                  const std::string& to) {
  const std::string dir = make_temp_dir("weft_model_");
  fs::copy(fixtures_dir() + "/models/" + name, dir, fs::copy_options::recursive);
  std::stringstream text;
  text << std::ifstream(dir + "/config.json").rdbuf();
  std::string config = text.str();
  const size_t at = config.find(from);
  WEFT_CHECK(at != std::string::npos) << from << " not in " << name << "/config.json";
  config.replace(at, from.size(), to);
  std::ofstream(dir + "/config.json") << config;
  return dir;
}

TEST(ModelLoading, LoadsSingleAndShardedDirectories) {
  for (const char* name : {"llama_gqa", "qwen2_tied"}) {
    auto model = CausalLM::from_pretrained(fixtures_dir() + "/models/" + name);
    ASSERT_TRUE(model.ok()) << model.status().message();
    for (const Param* p : (*model)->parameters()) {
      EXPECT_EQ(p->value.dtype(), DType::kF32) << p->name;
      EXPECT_EQ(p->value.shape(), p->spec.global_shape) << p->name;
      EXPECT_EQ(p->spec.split_dim, -1) << p->name;
    }
  }
}

TEST(ModelLoading, ShapeThatDisagreesWithConfigNamesTensorAndBothShapes) {
  const std::string dir = copy_with_config_edit("llama_gqa", "\"intermediate_size\": 112",
                                                "\"intermediate_size\": 100");
  auto model = CausalLM::from_pretrained(dir);
  ASSERT_FALSE(model.ok());
  const std::string message(model.status().message());
  EXPECT_THAT(message, HasSubstr("model.layers.0.mlp.gate_proj.weight"));
  EXPECT_THAT(message, HasSubstr("[112, 64]"));
  EXPECT_THAT(message, HasSubstr("[100, 64]"));
}

TEST(ModelLoading, MissingTensorIsNamed) {
  // Untied, the model needs lm_head.weight, which a tied checkpoint does not store.
  const std::string dir = copy_with_config_edit("qwen2_tied", "\"tie_word_embeddings\": true",
                                                "\"tie_word_embeddings\": false");
  auto model = CausalLM::from_pretrained(dir);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("lm_head.weight"));
}

TEST(ModelLoading, TiedModelHasNoHeadParameter) {
  auto model = CausalLM::from_pretrained(fixtures_dir() + "/models/qwen2_tied");
  ASSERT_TRUE(model.ok()) << model.status().message();
  for (const Param* p : (*model)->parameters()) EXPECT_NE(p->name, "lm_head.weight");
}

TEST(ModelLoading, TokenOutOfRangeIsNamedWithItsPosition) {
  auto model = CausalLM::from_pretrained(fixtures_dir() + "/models/llama_gqa");  // vocab 96
  ASSERT_TRUE(model.ok()) << model.status().message();
  EXPECT_TRUE((*model)->check_tokens(Tensor::from_ints({0, 95, 1, 2}, {2, 2})).ok());
  const absl::Status high = (*model)->check_tokens(Tensor::from_ints({0, 1, 2, 96}, {2, 2}));
  EXPECT_THAT(std::string(high.message()), HasSubstr("token id 96 at [1, 1]"));
  const absl::Status negative = (*model)->check_tokens(Tensor::from_ints({0, -3}, {1, 2}));
  EXPECT_THAT(std::string(negative.message()), HasSubstr("token id -3 at [0, 1]"));
  const absl::Status floats = (*model)->check_tokens(Tensor::from_floats({1, 2}, {1, 2}));
  EXPECT_THAT(std::string(floats.message()), HasSubstr("i32 or i64"));
}

TEST(ModelLoading, FromConfigRejectsAnInvalidConfig) {
  io::ModelConfig config;
  config.architecture = "LlamaForCausalLM";
  config.vocab_size = 16;
  config.hidden_size = 8;
  config.intermediate_size = 16;
  config.num_hidden_layers = 1;
  config.num_attention_heads = 3;
  config.num_key_value_heads = 2;
  config.head_dim = 4;
  config.max_position_embeddings = 32;
  auto model = CausalLM::from_config(config, 1);
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("num_key_value_heads 2"));
}

}  // namespace
}  // namespace weft::models
