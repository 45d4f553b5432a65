// HF size strings as transformers' convert_file_size_to_int reads them, and the side files an
// export copies (tokenizer, generation config) or writes (a generation config from config.json).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "runtime/io/file_util.h"
#include "runtime/io/hf_model_files.h"
#include "tests/support/test_util.h"

namespace weft::io {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(HfSize, ReadsTransformersUnits) {
  const std::pair<const char*, uint64_t> cases[] = {
      {"5GB", 5000000000},         {"500MB", 500000000},  {"20KB", 20000},
      {"2GiB", uint64_t{2} << 30}, {"512mib", 512 << 20}, {"4KiB", 4096},
      {"1048576", 1048576},        {"8Gb", 1000000000},   {"5gb", 625000000}};
  for (const auto& [text, bytes] : cases) {
    SCOPED_TRACE(text);
    const absl::StatusOr<uint64_t> got = parse_size(text);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, bytes);
  }
  for (const char* bad : {"", "GB", "-5GB", "1.5GB", "0", "5XB", "99999999999999999999"}) {
    SCOPED_TRACE(bad);
    const absl::StatusOr<uint64_t> got = parse_size(bad);
    ASSERT_FALSE(got.ok());
    EXPECT_THAT(std::string(got.status().message()),
                HasSubstr(std::string("size \"") + bad + "\" is not a positive whole number"));
  }
}

TEST(HfSideFiles, CopiesWhatTheSourceHasElseWritesAGenerationConfig) {
  const std::string source = testing::make_temp_dir("hf_side_src");
  const std::string to = testing::make_temp_dir("hf_side_to");
  const std::string config = R"({"bos_token_id": 128000, "eos_token_id": [128001, 128009],
                                 "pad_token_id": null, "vocab_size": 8})";
  // No source recorded: only the generation config, from config.json's ids.
  absl::StatusOr<HfSideFiles> files = write_hf_side_files(to, "", config);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_TRUE(files->copied.empty());
  EXPECT_TRUE(files->generation_from_config);
  EXPECT_EQ(nlohmann::json::parse(*read_file(to + "/generation_config.json")),
            nlohmann::json({{"_from_model_config", true},
                            {"bos_token_id", 128000},
                            {"eos_token_id", {128001, 128009}}}));
  // A source with a tokenizer but no generation config: the tokenizer copied, the config written.
  ASSERT_TRUE(write_file_atomic(source + "/tokenizer.json", "{}").ok());
  ASSERT_TRUE(write_file_atomic(source + "/merges.txt", "a b\n").ok());
  ASSERT_TRUE(write_file_atomic(source + "/notes.txt", "not a tokenizer file").ok());
  files = write_hf_side_files(to, source, config);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_THAT(files->copied, ElementsAre("tokenizer.json", "merges.txt"));
  EXPECT_TRUE(files->generation_from_config);
  EXPECT_FALSE(std::filesystem::exists(to + "/notes.txt"));
  // Its own generation config wins over config.json's ids.
  ASSERT_TRUE(write_file_atomic(source + "/generation_config.json", R"({"top_p": 0.9})").ok());
  files = write_hf_side_files(to, source, config);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_THAT(files->copied, ElementsAre("tokenizer.json", "merges.txt", "generation_config.json"));
  EXPECT_FALSE(files->generation_from_config);
  EXPECT_EQ(*read_file(to + "/generation_config.json"), R"({"top_p": 0.9})");
}

}  // namespace
}  // namespace weft::io
