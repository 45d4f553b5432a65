#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/io/file_util.h"
#include "runtime/io/run_config.h"
#include "tests/support/test_util.h"

namespace weft::io {
namespace {

using ::testing::HasSubstr;

constexpr const char* kRunText = R"pb(
  # a comment
  model: "/models/tiny"
  steps: 40
  global_batch: 8
  lr: 0.003
  parallel { tp: 2 pp: 1 }
)pb";

TEST(RunConfig, ParsesTextFormat) {
  auto config = parse_run_config(kRunText);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model(), "/models/tiny");
  EXPECT_EQ(config->steps(), 40);
  EXPECT_EQ(config->global_batch(), 8);
  EXPECT_EQ(config->lr(), 0.003);
  EXPECT_EQ(config->parallel().tp(), 2);
  EXPECT_EQ(config->seq_len(), 0);
}

TEST(RunConfig, LoadReadsTheFileAndParseErrorsNameLineAndColumn) {
  const std::string dir = testing::make_temp_dir("io_run_");
  const std::string path = dir + "/run.pbtxt";
  ASSERT_TRUE(write_file_atomic(path, "steps: 3\nlr: 0.1\n  stepz: 4\n").ok());
  auto bad = load_run_config(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr(path + ":3:"));
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("stepz"));

  ASSERT_TRUE(write_file_atomic(path, "steps: \"many\"\n").ok());
  EXPECT_THAT(std::string(load_run_config(path).status().message()), HasSubstr(path + ":1:"));

  ASSERT_TRUE(write_file_atomic(path, kRunText).ok());
  auto good = load_run_config(path);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->steps(), 40);

  auto missing = load_run_config(dir + "/absent.pbtxt");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(dir + "/absent.pbtxt"));
}

TEST(RunConfig, FieldPathsListEveryLeaf) {
  const std::vector<std::string> paths = run_config_field_paths();
  EXPECT_EQ(paths.front(), "model");
  EXPECT_THAT(paths, ::testing::Contains("global_batch"));
  EXPECT_THAT(paths, ::testing::Contains("parallel.etp"));
  EXPECT_THAT(paths, ::testing::Not(::testing::Contains("parallel")));
}

TEST(RunConfig, SetFieldParsesEachTypeFromFlagText) {
  RunConfig config;
  ASSERT_TRUE(set_run_config_field(config, "model", "/a path/with \"quotes\"").ok());
  ASSERT_TRUE(set_run_config_field(config, "global-batch", "16").ok());
  ASSERT_TRUE(set_run_config_field(config, "lr", "1e-4").ok());
  ASSERT_TRUE(set_run_config_field(config, "seed", "18446744073709551615").ok());
  ASSERT_TRUE(set_run_config_field(config, "tp", "4").ok());  // unique leaf: parallel.tp
  ASSERT_TRUE(set_run_config_field(config, "parallel.pp", "2").ok());
  EXPECT_EQ(config.model(), "/a path/with \"quotes\"");
  EXPECT_EQ(config.global_batch(), 16);
  EXPECT_EQ(config.lr(), 1e-4);
  EXPECT_EQ(config.seed(), 18446744073709551615ull);
  EXPECT_EQ(config.parallel().tp(), 4);
  EXPECT_EQ(config.parallel().pp(), 2);

  absl::Status bad = set_run_config_field(config, "steps", "ten");
  EXPECT_THAT(std::string(bad.message()), HasSubstr("steps: \"ten\" is not a valid int64"));
  absl::Status unknown = set_run_config_field(config, "stepz", "1");
  EXPECT_THAT(std::string(unknown.message()),
              HasSubstr("RunConfig has no field \"stepz\" (fields: model, data, steps"));
  EXPECT_FALSE(set_run_config_field(config, "parallel", "1").ok());
}

TEST(RunConfig, MergeAppliesExactlyTheFieldsTheUserSet) {
  RunConfig file = *parse_run_config(kRunText);
  RunConfig flags;
  ASSERT_TRUE(set_run_config_field(flags, "steps", "0").ok());  // a zero that must still win
  ASSERT_TRUE(set_run_config_field(flags, "data", "tokens.txt").ok());
  ASSERT_TRUE(set_run_config_field(flags, "tp", "1").ok());
  flags.set_lr(0.5);  // set but not named: must not be applied
  ASSERT_TRUE(merge_run_config(flags, {"steps", "data", "tp"}, file).ok());
  EXPECT_EQ(file.steps(), 0);
  EXPECT_EQ(file.data(), "tokens.txt");
  EXPECT_EQ(file.parallel().tp(), 1);
  EXPECT_EQ(file.lr(), 0.003);
  EXPECT_EQ(file.global_batch(), 8);
  EXPECT_EQ(file.model(), "/models/tiny");

  absl::Status unknown = merge_run_config(flags, {"nope"}, file);
  EXPECT_THAT(std::string(unknown.message()), HasSubstr("RunConfig has no field \"nope\""));
}

TEST(RunConfig, TextRoundTrips) {
  RunConfig config = *parse_run_config(kRunText);
  auto again = parse_run_config(run_config_to_text(config));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), config.SerializeAsString());
}

}  // namespace
}  // namespace weft::io
