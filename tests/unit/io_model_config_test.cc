#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "runtime/io/file_util.h"
#include "runtime/io/model_config.h"
#include "tests/support/test_util.h"

namespace weft::io {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

json tiny_llama() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"vocab_size", 64},
          {"hidden_size", 32},
          {"intermediate_size", 48},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4}};
}

ModelConfig parse_ok(const json& config) {
  absl::StatusOr<ModelConfig> parsed = parse_model_config(config.dump());
  EXPECT_TRUE(parsed.ok()) << parsed.status() << "\n" << config.dump();
  return parsed.ok() ? *parsed : ModelConfig{};
}

void expect_rejected(const json& config, const std::string& problem) {
  absl::StatusOr<ModelConfig> parsed = parse_model_config(config.dump());
  ASSERT_FALSE(parsed.ok()) << "accepted, expected: " << problem << "\n" << config.dump();
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(problem));
}

json with(json config, const std::string& key, json value) {
  config[key] = std::move(value);
  return config;
}

json without(json config, const std::string& key) {
  config.erase(key);
  return config;
}

void expect_same_model(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.architecture, b.architecture);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.attention_bias, b.attention_bias);
  EXPECT_EQ(a.num_local_experts, b.num_local_experts);
  EXPECT_EQ(a.num_experts_per_tok, b.num_experts_per_tok);
  EXPECT_EQ(a.router_aux_loss_coef, b.router_aux_loss_coef);
  EXPECT_EQ(a.layer_types, b.layer_types);
}

TEST(ModelConfig, LlamaDefaultsFollowTransformers) {
  const ModelConfig c = parse_ok(tiny_llama());
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.is_moe());
  EXPECT_EQ(c.layer_types, std::vector<LayerType>(2, LayerType::kFullAttention));
  EXPECT_FALSE(c.has_linear_attention());
  EXPECT_EQ(c.json, tiny_llama().dump());
}

TEST(ModelConfig, ReadsExplicitValuesAndNullsMeanDefault) {
  json config = tiny_llama();
  config["num_key_value_heads"] = 2;
  config["head_dim"] = 16;
  config["rope_theta"] = 500000;  // an integer in JSON is still a number
  config["rms_norm_eps"] = 1e-5;
  config["tie_word_embeddings"] = true;
  config["max_position_embeddings"] = 128;
  config["rope_scaling"] = nullptr;
  config["hidden_act"] = "silu";
  config["attention_bias"] = false;
  const ModelConfig c = parse_ok(config);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.max_position_embeddings, 128);
  EXPECT_EQ(parse_ok(with(tiny_llama(), "num_key_value_heads", nullptr)).num_key_value_heads, 4);
}

TEST(ModelConfig, Qwen2AlwaysHasAttentionBias) {
  const ModelConfig c = parse_ok(
      with(with(tiny_llama(), "architectures", {"Qwen2ForCausalLM"}), "use_sliding_window", false));
  EXPECT_EQ(c.architecture, "Qwen2ForCausalLM");
  EXPECT_TRUE(c.attention_bias);
}

TEST(ModelConfig, MixtralReadsExpertsWithTransformersDefaults) {
  json config = with(tiny_llama(), "architectures", {"MixtralForCausalLM"});
  ModelConfig c = parse_ok(config);
  EXPECT_TRUE(c.is_moe());
  EXPECT_EQ(c.num_local_experts, 8);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.router_aux_loss_coef, 0.001);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  config["num_local_experts"] = 4;
  config["num_experts_per_tok"] = 1;
  config["router_aux_loss_coef"] = 0.02;
  config["sliding_window"] = nullptr;
  c = parse_ok(config);
  EXPECT_EQ(c.num_local_experts, 4);
  EXPECT_EQ(c.num_experts_per_tok, 1);
  EXPECT_EQ(c.router_aux_loss_coef, 0.02);
}

TEST(ModelConfig, ModelTypeStandsInForMissingArchitectures) {
  const json base = without(tiny_llama(), "architectures");
  EXPECT_EQ(parse_ok(with(base, "model_type", "llama")).architecture, "LlamaForCausalLM");
  EXPECT_EQ(parse_ok(with(base, "model_type", "qwen2")).architecture, "Qwen2ForCausalLM");
  EXPECT_EQ(parse_ok(with(base, "model_type", "mixtral")).architecture, "MixtralForCausalLM");
  expect_rejected(with(base, "model_type", "gpt2"), "unsupported architecture \"model_type gpt2\"");
  expect_rejected(base, "names no architectures and no model_type");
}

TEST(ModelConfig, ReadsLayerTypes) {
  const ModelConfig c =
      parse_ok(with(tiny_llama(), "layer_types", {"linear_attention", "full_attention"}));
  EXPECT_EQ(c.layer_types,
            (std::vector<LayerType>{LayerType::kLinearAttention, LayerType::kFullAttention}));
  EXPECT_TRUE(c.has_linear_attention());
}

TEST(ModelConfig, ReadsRopeThetaFromRopeParameters) {
  json config = tiny_llama();
  config["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1234.0}};
  EXPECT_EQ(parse_ok(config).rope_theta, 1234.0);
  config["rope_parameters"]["rope_type"] = "yarn";
  config["rope_parameters"]["factor"] = 4.0;
  const ModelConfig yarn = parse_ok(config);
  EXPECT_EQ(yarn.rope_theta, 1234.0);
  EXPECT_EQ(yarn.rope_scaling.type, RopeType::kYarn);
  EXPECT_EQ(yarn.rope_scaling.factor, 4.0);
  config.erase("rope_parameters");
  config["rope_theta"] = 77.0;
  config["rope_parameters"] = {{"factor", 2.0}};  // no type: "default", theta from the top
  EXPECT_EQ(parse_ok(config).rope_scaling.type, RopeType::kDefault);
  EXPECT_EQ(parse_ok(config).rope_theta, 77.0);
}

TEST(ModelConfig, ReadsEveryRopeScalingTypeWithTransformersDefaults) {
  const ModelConfig llama3 = parse_ok(with(tiny_llama(), "rope_scaling",
                                           {{"rope_type", "llama3"},
                                            {"factor", 8.0},
                                            {"low_freq_factor", 1.0},
                                            {"high_freq_factor", 4.0},
                                            {"original_max_position_embeddings", 8192}}));
  EXPECT_EQ(llama3.rope_scaling.type, RopeType::kLlama3);
  EXPECT_EQ(llama3.rope_scaling.factor, 8.0);
  EXPECT_EQ(llama3.rope_scaling.low_freq_factor, 1.0);
  EXPECT_EQ(llama3.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(llama3.rope_scaling.original_max_position_embeddings, 8192);

  // The legacy key "type"; yarn's defaults: original length max_position_embeddings, betas
  // 32 and 1 (also for 0, as transformers' `or`), truncation, attention factor 0.1 ln(f) + 1.
  json yarn =
      with(tiny_llama(), "rope_scaling", {{"type", "yarn"}, {"factor", 4.0}, {"beta_slow", 0}});
  yarn["max_position_embeddings"] = 4096;
  const RopeScaling y = parse_ok(yarn).rope_scaling;
  EXPECT_EQ(y.type, RopeType::kYarn);
  EXPECT_EQ(y.original_max_position_embeddings, 4096);
  EXPECT_EQ(y.beta_fast, 32.0);
  EXPECT_EQ(y.beta_slow, 1.0);
  EXPECT_TRUE(y.truncate);
  EXPECT_DOUBLE_EQ(y.attention_factor, 0.1 * std::log(4.0) + 1.0);
  // mscale and mscale_all_dim both given: the ratio of their mscales (DeepSeek); one alone is
  // ignored; an explicit attention_factor wins.
  yarn["rope_scaling"]["mscale"] = 0.707;
  EXPECT_DOUBLE_EQ(parse_ok(yarn).rope_scaling.attention_factor, 0.1 * std::log(4.0) + 1.0);
  yarn["rope_scaling"]["mscale_all_dim"] = 1.0;
  EXPECT_DOUBLE_EQ(parse_ok(yarn).rope_scaling.attention_factor,
                   (0.0707 * std::log(4.0) + 1.0) / (0.1 * std::log(4.0) + 1.0));
  yarn["rope_scaling"]["attention_factor"] = 1.5;
  yarn["rope_scaling"]["truncate"] = false;
  yarn["rope_scaling"]["original_max_position_embeddings"] = 1024;
  EXPECT_EQ(parse_ok(yarn).rope_scaling.attention_factor, 1.5);
  EXPECT_FALSE(parse_ok(yarn).rope_scaling.truncate);
  EXPECT_EQ(parse_ok(yarn).rope_scaling.original_max_position_embeddings, 1024);

  for (const char* type : {"linear", "dynamic"}) {
    const RopeScaling r =
        parse_ok(with(tiny_llama(), "rope_scaling", {{"rope_type", type}, {"factor", 2.5}}))
            .rope_scaling;
    EXPECT_EQ(r.type, std::string(type) == "linear" ? RopeType::kLinear : RopeType::kDynamic);
    EXPECT_EQ(r.factor, 2.5);
  }
  EXPECT_EQ(parse_ok(with(tiny_llama(), "rope_scaling", {{"rope_type", "default"}})).rope_scaling,
            RopeScaling{});
}

TEST(ModelConfigBadInput, RopeScalingErrorsNameTheField) {
  const auto scaled = [](json scaling) { return with(tiny_llama(), "rope_scaling", scaling); };
  expect_rejected(scaled({{"rope_type", "longrope"}, {"factor", 2.0}}),
                  "rope_scaling.rope_type \"longrope\" is not supported (expected default, "
                  "linear, dynamic, yarn or llama3)");
  expect_rejected(scaled({{"type", "ntk"}}), "rope_scaling.type \"ntk\" is not supported");
  expect_rejected(scaled({{"factor", 8.0}}),
                  "rope_scaling {\"factor\":8.0} names no type (expected \"rope_type\" or "
                  "\"type\")");
  expect_rejected(scaled({{"rope_type", "linear"}}),
                  "rope_scaling (rope_type \"linear\"): missing required field \"factor\"");
  expect_rejected(scaled({{"rope_type", "llama3"},
                          {"factor", 8.0},
                          {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 8192}}),
                  "rope_scaling (rope_type \"llama3\"): missing required field "
                  "\"low_freq_factor\"");
  expect_rejected(scaled({{"rope_type", "llama3"},
                          {"factor", 8.0},
                          {"low_freq_factor", 4.0},
                          {"high_freq_factor", 1.0},
                          {"original_max_position_embeddings", 8192}}),
                  "low_freq_factor 4 and high_freq_factor 1 must satisfy 0 < low < high");
  expect_rejected(scaled({{"rope_type", "dynamic"}, {"factor", 0}}),
                  "rope_scaling (rope_type \"dynamic\"): factor must be positive, got 0");
  expect_rejected(scaled({{"rope_type", "yarn"}, {"factor", "4"}}),
                  "field factor must be a number, got \"4\"");
  expect_rejected(scaled({{"rope_type", "yarn"}, {"factor", 4.0}, {"beta_fast", -1}}),
                  "beta_fast -1 and beta_slow 1 must be positive");
  expect_rejected(scaled(json::array()), "field rope_scaling must be an object, got []");
  expect_rejected(with(tiny_llama(), "partial_rotary_factor", 0.5),
                  "partial_rotary_factor 0.5 is not supported");
  json two_dims = scaled({{"rope_type", "dynamic"}, {"factor", 2.0}});
  two_dims["head_dim"] = 2;
  expect_rejected(two_dims, "dynamic rope_scaling needs head_dim > 2");
}

// An export writes rope_scaling / rope_parameters back exactly as the source had them (the legacy
// key, integer values and keys weft does not read included); a config made or changed in code
// writes what it holds.
TEST(ModelConfig, ToJsonKeepsTheSourceRopeScaling) {
  const json source_scaling = {{"type", "yarn"},    {"factor", 4},
                               {"beta_fast", 32},   {"original_max_position_embeddings", 512},
                               {"finetuned", true}, {"mscale", nullptr}};
  ModelConfig c = parse_ok(with(tiny_llama(), "rope_scaling", source_scaling));
  EXPECT_EQ(json::parse(model_config_to_json(c))["rope_scaling"], source_scaling);

  json v5 = tiny_llama();
  v5["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 500000},
                           {"factor", 8},           {"low_freq_factor", 1},
                           {"high_freq_factor", 4}, {"original_max_position_embeddings", 64}};
  const json out = json::parse(model_config_to_json(parse_ok(v5)));
  EXPECT_EQ(out["rope_parameters"], v5["rope_parameters"]);
  EXPECT_EQ(parse_ok(out).rope_scaling, parse_ok(v5).rope_scaling);

  c.rope_scaling.factor = 8.0;  // changed in code: written from the struct, read back equal
  const ModelConfig again = parse_ok(json::parse(model_config_to_json(c)));
  EXPECT_EQ(again.rope_scaling, c.rope_scaling);
  c.rope_scaling = RopeScaling{};
  EXPECT_TRUE(json::parse(model_config_to_json(c))["rope_scaling"].is_null());
}

TEST(ModelConfig, ToJsonRoundTripsEveryArchitecture) {
  json llama = tiny_llama();
  llama["num_key_value_heads"] = 2;
  llama["head_dim"] = 12;
  llama["rope_theta"] = 25000.5;
  llama["rms_norm_eps"] = 3e-6;
  llama["tie_word_embeddings"] = true;
  llama["max_position_embeddings"] = 99;
  llama["layer_types"] = {"full_attention", "linear_attention"};
  json mixtral = with(tiny_llama(), "architectures", {"MixtralForCausalLM"});
  mixtral["num_local_experts"] = 3;
  mixtral["num_experts_per_tok"] = 2;
  mixtral["router_aux_loss_coef"] = 0.0;
  for (const json& config :
       {llama, with(tiny_llama(), "architectures", {"Qwen2ForCausalLM"}), mixtral}) {
    const ModelConfig original = parse_ok(config);
    const ModelConfig again = parse_ok(json::parse(model_config_to_json(original)));
    expect_same_model(again, original);
  }
}

TEST(ModelConfig, ToJsonKeepsKeysWeftDoesNotModelAndWritesHfKeys) {
  json config = tiny_llama();
  config["bos_token_id"] = 1;
  config["torch_dtype"] = "bfloat16";
  ModelConfig c = parse_ok(config);
  const json out = json::parse(model_config_to_json(c));
  EXPECT_EQ(out["bos_token_id"], 1);
  EXPECT_EQ(out["torch_dtype"], "bfloat16");
  EXPECT_EQ(out["model_type"], "llama");
  EXPECT_EQ(out["num_key_value_heads"], 4);
  EXPECT_EQ(out["head_dim"], 8);
  EXPECT_TRUE(out["rope_scaling"].is_null());
  EXPECT_FALSE(out.contains("layer_types"));  // all full attention: plain HF config

  ModelConfig built;  // a config made in code, with no json text
  built.architecture = "Qwen2ForCausalLM";
  built.vocab_size = 10;
  built.hidden_size = 8;
  built.intermediate_size = 16;
  built.num_hidden_layers = 1;
  built.num_attention_heads = 2;
  built.num_key_value_heads = 1;
  built.head_dim = 4;
  built.max_position_embeddings = 32;
  built.attention_bias = true;
  built.layer_types = {LayerType::kFullAttention};
  expect_same_model(parse_ok(json::parse(model_config_to_json(built))), built);
}

TEST(ModelConfigBadInput, MissingOrMistypedFields) {
  for (const char* field : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads"}) {
    expect_rejected(without(tiny_llama(), field),
                    std::string("missing required field \"") + field + "\"");
  }
  expect_rejected(with(tiny_llama(), "hidden_size", "32"),
                  "field hidden_size must be an integer, got \"32\"");
  expect_rejected(with(tiny_llama(), "hidden_size", 32.5), "field hidden_size must be an integer");
  expect_rejected(with(tiny_llama(), "rope_theta", "big"), "field rope_theta must be a number");
  expect_rejected(with(tiny_llama(), "tie_word_embeddings", 1),
                  "field tie_word_embeddings must be true or false");
  expect_rejected(with(tiny_llama(), "vocab_size", 0), "vocab_size must be positive, got 0");
  expect_rejected(with(tiny_llama(), "rms_norm_eps", 0), "rms_norm_eps must be positive");
  EXPECT_THAT(std::string(parse_model_config("{\"a\": ").status().message()),
              HasSubstr("config.json is not valid JSON"));
  EXPECT_THAT(std::string(parse_model_config("[1]").status().message()),
              HasSubstr("config.json is not a JSON object"));
}

TEST(ModelConfigBadInput, HeadsThatDoNotDivide) {
  json config = tiny_llama();
  config["num_attention_heads"] = 6;
  config["num_key_value_heads"] = 4;
  config["hidden_size"] = 48;
  expect_rejected(config, "num_attention_heads 6 is not divisible by num_key_value_heads 4");
  expect_rejected(with(tiny_llama(), "num_attention_heads", 5),
                  "hidden_size 32 is not divisible by num_attention_heads 5");
  // An explicit head_dim makes hidden_size / heads irrelevant (as in transformers).
  EXPECT_EQ(parse_ok(with(with(tiny_llama(), "num_attention_heads", 5), "head_dim", 8)).head_dim,
            8);
  expect_rejected(with(tiny_llama(), "head_dim", 7), "head_dim 7 must be even");
}

TEST(ModelConfigBadInput, LayerTypesOfWrongLengthOrUnknownKind) {
  expect_rejected(with(tiny_llama(), "layer_types", {"full_attention"}),
                  "layer_types has 1 entries, expected num_hidden_layers 2");
  expect_rejected(with(tiny_llama(), "layer_types", {"full_attention", "sliding_attention"}),
                  "layer_types[1] is \"sliding_attention\", expected \"full_attention\" or "
                  "\"linear_attention\"");
  expect_rejected(with(tiny_llama(), "layer_types", "full_attention"),
                  "field layer_types must be a list");
}

TEST(ModelConfigBadInput, UnsupportedArchitectureOrMath) {
  expect_rejected(with(tiny_llama(), "architectures", {"GPT2LMHeadModel"}),
                  "unsupported architecture \"GPT2LMHeadModel\"");
  expect_rejected(with(tiny_llama(), "architectures", json::array()),
                  "field architectures must be a non-empty list");
  expect_rejected(with(tiny_llama(), "hidden_act", "gelu"),
                  "hidden_act \"gelu\" is not supported (expected \"silu\")");
  expect_rejected(with(tiny_llama(), "attention_bias", true),
                  "attention_bias true is not supported for LlamaForCausalLM");
  expect_rejected(with(tiny_llama(), "mlp_bias", true), "mlp_bias true is not supported");
  expect_rejected(with(tiny_llama(), "attention_dropout", 0.1), "attention_dropout 0.1");
  const json qwen = with(tiny_llama(), "architectures", {"Qwen2ForCausalLM"});
  expect_rejected(with(qwen, "use_sliding_window", true),
                  "use_sliding_window true is not supported");
  const json mixtral = with(tiny_llama(), "architectures", {"MixtralForCausalLM"});
  expect_rejected(with(mixtral, "sliding_window", 4096), "sliding_window 4096 is not supported");
  expect_rejected(with(mixtral, "router_jitter_noise", 0.01), "router_jitter_noise 0.01");
  expect_rejected(with(mixtral, "num_experts_per_tok", 9),
                  "num_experts_per_tok 9 must be in [1, num_local_experts 8]");
}

TEST(ModelConfig, LoadReadsConfigJsonAndErrorsNameThePath) {
  const std::string dir = testing::make_temp_dir("io_cfg_");
  auto missing = load_model_config(dir);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(dir + "/config.json"));
  ASSERT_TRUE(write_file_atomic(dir + "/config.json", tiny_llama().dump()).ok());
  auto loaded = load_model_config(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->hidden_size, 32);
  ASSERT_TRUE(
      write_file_atomic(dir + "/config.json", without(tiny_llama(), "vocab_size").dump()).ok());
  EXPECT_THAT(std::string(load_model_config(dir).status().message()),
              HasSubstr(dir + "/config.json: missing required field \"vocab_size\""));
}

}  // namespace
}  // namespace weft::io
