#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/io/file_util.h"
#include "runtime/io/model_config.h"
#include "runtime/io/safetensors.h"
#include "tests/support/test_util.h"

namespace weft::io {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// A tensor of `dtype` whose bytes are 0, 1, 2, ... (mod 251), so byte equality is meaningful.
Tensor patterned(Shape shape, DType dtype, int seed) {
  Tensor t = Tensor::empty(std::move(shape), dtype);
  auto* bytes = static_cast<uint8_t*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) bytes[i] = static_cast<uint8_t>((i + seed) % 251);
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// Writes u64 header length + header + data, for hand-made (often broken) files.
std::string write_raw(const std::string& dir, const std::string& name, const std::string& header,
                      const std::string& data, uint64_t header_length) {
  const std::string path = (fs::path(dir) / name).string();
  std::string bytes(8, '\0');
  std::memcpy(bytes.data(), &header_length, 8);
  EXPECT_TRUE(write_file_atomic(path, bytes + header + data).ok());
  return path;
}

std::string write_raw(const std::string& dir, const std::string& name, const std::string& header,
                      const std::string& data) {
  return write_raw(dir, name, header, data, header.size());
}

// open() must fail with a message that names the file and contains `problem`.
void expect_open_fails(const std::string& path, const std::string& problem) {
  absl::StatusOr<std::shared_ptr<SafetensorsFile>> file = SafetensorsFile::open(path);
  ASSERT_FALSE(file.ok()) << path << " opened, expected: " << problem;
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(problem));
}

NamedTensors every_dtype() {
  return {{"f32", patterned({2, 3}, DType::kF32, 1)}, {"bf16", patterned({4}, DType::kBF16, 2)},
          {"f16", patterned({3, 2}, DType::kF16, 3)}, {"i32", patterned({5}, DType::kI32, 4)},
          {"i64", patterned({2, 2}, DType::kI64, 5)}, {"u8", patterned({7}, DType::kU8, 6)},
          {"scalar", patterned({}, DType::kF32, 7)},  {"empty", patterned({0, 3}, DType::kF32, 8)}};
}

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  const std::string dir = testing::make_temp_dir("io_st_");
  const std::string path = dir + "/all.safetensors";
  const NamedTensors tensors = every_dtype();
  ASSERT_TRUE(write_safetensors(path, tensors, {{"format", "pt"}, {"step", "7"}}).ok());

  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->names(), (std::vector<std::string>{"bf16", "empty", "f16", "f32", "i32", "i64",
                                                        "scalar", "u8"}));
  EXPECT_EQ((*file)->metadata(),
            (std::map<std::string, std::string>{{"format", "pt"}, {"step", "7"}}));
  for (const auto& [name, expected] : tensors) {
    ASSERT_TRUE((*file)->contains(name));
    auto info = (*file)->info(name);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->dtype, expected.dtype()) << name;
    EXPECT_EQ(info->shape, expected.shape()) << name;
    auto got = (*file)->get(name);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(same_bytes(*got, expected)) << name;
  }
  EXPECT_FALSE((*file)->contains("missing"));
}

TEST(Safetensors, HeaderIsPaddedSoDataStartsOn8Bytes) {
  const std::string dir = testing::make_temp_dir("io_st_");
  for (const std::string name : {"a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg"}) {
    const std::string path = dir + "/" + name + ".safetensors";
    ASSERT_TRUE(write_safetensors(path, {{name, patterned({1}, DType::kU8, 0)}}).ok());
    auto bytes = read_file(path);
    ASSERT_TRUE(bytes.ok());
    uint64_t header_length;
    std::memcpy(&header_length, bytes->data(), 8);
    EXPECT_EQ(header_length % 8, 0u) << name;
    EXPECT_EQ(bytes->size(), 8 + header_length + 1);
    // The padding is spaces, so the header is still plain JSON.
    EXPECT_TRUE(nlohmann::json::accept(bytes->substr(8, header_length)));
  }
}

TEST(Safetensors, GetIsAZeroCopyViewThatOutlivesTheFileObject) {
  const std::string dir = testing::make_temp_dir("io_st_");
  const std::string path = dir + "/w.safetensors";
  const Tensor expected = testing::random_tensor({16, 8}, 1);
  ASSERT_TRUE(write_safetensors(path, {{"w", expected}}).ok());
  Tensor first, second;
  {
    auto file = SafetensorsFile::open(path);
    ASSERT_TRUE(file.ok());
    first = *(*file)->get("w");
    second = *(*file)->get("w");
  }
  EXPECT_EQ(first.raw(), second.raw());  // both views of the same mapped bytes
  EXPECT_TRUE(same_bytes(first, expected));
}

TEST(Safetensors, WritingIntoABorrowedTensorLeavesTheFileUnchanged) {
  const std::string dir = testing::make_temp_dir("io_st_");
  const std::string path = dir + "/w.safetensors";
  ASSERT_TRUE(write_safetensors(path, {{"w", Tensor::from_floats({1, 2, 3}, {3})}}).ok());
  {
    auto file = SafetensorsFile::open(path);
    ASSERT_TRUE(file.ok());
    (*file)->get("w")->data<float>()[0] = 99;
  }
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->get("w")->to_floats(), (std::vector<float>{1, 2, 3}));
}

TEST(Safetensors, GetF32ConvertsBf16AndF16Exactly) {
  const std::string dir = testing::make_temp_dir("io_st_");
  const std::string path = dir + "/half.safetensors";
  // Each value is exact in both bf16 and f16.
  const std::vector<float> values = {0.0f, -0.0f, 1.0f, -2.5f, 0.0078125f, 1024.0f, 3.5f, -0.375f};
  const Tensor f32 = Tensor::from_floats(values, {2, 4});
  ASSERT_TRUE(write_safetensors(path, {{"bf16", f32.to_dtype(DType::kBF16)},
                                       {"f16", f32.to_dtype(DType::kF16)},
                                       {"f32", f32},
                                       {"ids", Tensor::from_ints({1, 2}, {2})}})
                  .ok());
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok());
  for (const std::string name : {"bf16", "f16", "f32"}) {
    auto got = (*file)->get_f32(name);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->dtype(), DType::kF32);
    EXPECT_EQ(got->shape(), (Shape{2, 4}));
    const std::vector<float> floats = got->to_floats();
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_EQ(std::signbit(floats[i]), std::signbit(values[i])) << name << " " << i;
      EXPECT_EQ(floats[i], values[i]) << name << " " << i;
    }
  }
  // get_f32 of F32 is a copy, not the mapped bytes.
  EXPECT_NE((*file)->get_f32("f32")->raw(), (*file)->get("f32")->raw());
  auto ids = (*file)->get_f32("ids");
  ASSERT_FALSE(ids.ok());
  EXPECT_THAT(std::string(ids.status().message()), HasSubstr("is I64, expected F32, BF16 or F16"));
}

TEST(Safetensors, MissingNameIsNotFound) {
  const std::string dir = testing::make_temp_dir("io_st_");
  const std::string path = dir + "/w.safetensors";
  ASSERT_TRUE(write_safetensors(path, {{"w", Tensor::from_floats({1}, {1})}}).ok());
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok());
  for (const absl::Status& status : {(*file)->get("nope").status(), (*file)->info("nope").status(),
                                     (*file)->get_f32("nope").status()}) {
    EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(std::string(status.message()), HasSubstr("tensor 'nope' not found in " + path));
  }
}

TEST(Safetensors, WriteReplacesAtomicallyAndKeepsTheOldFileOnFailure) {
  const std::string dir = testing::make_temp_dir("io_st_");
  const std::string path = dir + "/w.safetensors";
  ASSERT_TRUE(write_safetensors(path, {{"old", Tensor::from_floats({1}, {1})}}).ok());
  const Tensor t = Tensor::from_floats({2}, {1});
  absl::Status repeated = write_safetensors(path, {{"a", t}, {"a", t}});
  EXPECT_THAT(std::string(repeated.message()),
              HasSubstr("tensor name 'a' is reserved or repeated"));
  EXPECT_FALSE(write_safetensors(path, {{"__metadata__", t}}).ok());
  EXPECT_FALSE(write_safetensors(path, {{"undefined", Tensor()}}).ok());
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->names(), std::vector<std::string>{"old"});

  ASSERT_TRUE(write_safetensors(path, {{"new", t}}).ok());
  EXPECT_EQ((*SafetensorsFile::open(path))->names(), std::vector<std::string>{"new"});
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1)
      << "a temporary file was left behind";

  absl::Status no_dir = write_safetensors(dir + "/no/such/dir/w.safetensors", {{"a", t}});
  EXPECT_THAT(std::string(no_dir.message()), HasSubstr(dir + "/no/such/dir/w.safetensors"));
}

TEST(Safetensors, WritesSlicesAndViewsByTheirOwnBytes) {
  const std::string dir = testing::make_temp_dir("io_st_");
  const std::string path = dir + "/slice.safetensors";
  const Tensor whole = testing::random_tensor({6, 4}, 2);
  const Tensor rows = whole.slice(2, 5);
  ASSERT_TRUE(write_safetensors(path, {{"rows", rows}, {"flat", whole.view({-1})}}).ok());
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_TRUE(same_bytes(*(*file)->get("rows"), rows));
  EXPECT_TRUE(same_bytes(*(*file)->get("flat"), whole.view({-1})));
}

TEST(SafetensorsBadInput, ShortAndTruncatedFiles) {
  const std::string dir = testing::make_temp_dir("io_st_");
  expect_open_fails(write_raw(dir, "no_header", "", ""), "header is not valid JSON");
  const std::string tiny = dir + "/tiny.safetensors";
  ASSERT_TRUE(write_file_atomic(tiny, "abc").ok());
  expect_open_fails(tiny, "file is 3 bytes, too short for the 8-byte header length");

  expect_open_fails(write_raw(dir, "long_header", "{}", "", 1000),
                    "header length 1000 runs past the end of the file (10 bytes");

  const std::string good = dir + "/good.safetensors";
  ASSERT_TRUE(write_safetensors(good, {{"w", testing::random_tensor({8}, 3)}}).ok());
  std::string bytes = *read_file(good);
  const std::string cut = dir + "/cut.safetensors";
  ASSERT_TRUE(write_file_atomic(cut, bytes.substr(0, bytes.size() - 4)).ok());
  expect_open_fails(cut,
                    "tensor 'w' data_offsets [0,32] are out of range: the data section holds 28");
}

TEST(SafetensorsBadInput, MalformedHeaders) {
  const std::string dir = testing::make_temp_dir("io_st_");
  const std::string four_bytes(4, '\0');
  expect_open_fails(write_raw(dir, "garbage", "{not json", ""), "header is not valid JSON");
  expect_open_fails(write_raw(dir, "array", "[1, 2]", ""), "header is not a JSON object");
  expect_open_fails(write_raw(dir, "no_offsets", R"({"w": {"dtype": "F32", "shape": [1]}})", ""),
                    "tensor 'w' needs an object with dtype, shape and data_offsets");
  expect_open_fails(write_raw(dir, "unknown_dtype",
                              R"({"w": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})",
                              std::string(8, '\0')),
                    "tensor 'w': unsupported dtype \"F64\"");
  expect_open_fails(
      write_raw(dir, "negative_dim",
                R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", four_bytes),
      "tensor 'w' shape entry must be a non-negative integer, got -1");
  expect_open_fails(write_raw(dir, "metadata", R"({"__metadata__": {"a": 1}})", ""),
                    "__metadata__ value of \"a\" is not a string");
  expect_open_fails(write_raw(dir, "huge_shape",
                              R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296],)"
                              R"( "data_offsets": [0, 4]}})",
                              four_bytes),
                    "is too large");
}

TEST(SafetensorsBadInput, OffsetsThatDoNotMatchTheData) {
  const std::string dir = testing::make_temp_dir("io_st_");
  const std::string data(16, '\0');
  expect_open_fails(
      write_raw(dir, "past_end",
                R"({"w": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}})", data),
      "data_offsets [0,32] are out of range: the data section holds 16 bytes");
  expect_open_fails(
      write_raw(dir, "reversed", R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})",
                data),
      "data_offsets [8,4] are out of range");
  expect_open_fails(
      write_raw(dir, "mismatch", R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})",
                data),
      "tensor 'w' has shape [3] of F32 (12 bytes) but data_offsets [0,8] hold 8 bytes");
  expect_open_fails(write_raw(dir, "overlap",
                              R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                              R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                              data),
                    "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
  // Tensors of zero bytes own no bytes and cannot overlap anything.
  const std::string ok =
      write_raw(dir, "zero_sized",
                R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                R"( "b": {"dtype": "F32", "shape": [0, 5], "data_offsets": [8, 8]}})",
                data);
  auto file = SafetensorsFile::open(ok);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->get("b")->shape(), (Shape{0, 5}));
}

TEST(SafetensorsBadInput, MissingFileIsNotFound) {
  const std::string path = testing::make_temp_dir("io_st_") + "/absent.safetensors";
  auto file = SafetensorsFile::open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(path));
}

TEST(Safetensors, MisalignedDataIsCopiedNotBorrowed) {
  // The data section starts 8-byte aligned; a 1-byte tensor first leaves the F32 tensor at an odd
  // address, which get() must not hand out as a float pointer.
  const std::string dir = testing::make_temp_dir("io_st_");
  const float values[2] = {1.5f, -2.0f};
  std::string data(1, '\7');
  data.append(reinterpret_cast<const char*>(values), sizeof(values));
  std::string header = R"({"pad": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},)"
                       R"( "w": {"dtype": "F32", "shape": [2], "data_offsets": [1, 9]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  auto file = SafetensorsFile::open(write_raw(dir, "odd", header, data));
  ASSERT_TRUE(file.ok()) << file.status();
  const Tensor w = *(*file)->get("w");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w.raw()) % 4, 0u);
  EXPECT_EQ(w.to_floats(), (std::vector<float>{1.5f, -2.0f}));
}

NamedTensors model_tensors() {
  return {{"model.embed_tokens.weight", testing::random_tensor({10, 4}, 1)},           // 160 bytes
          {"model.layers.0.mlp.up_proj.weight", testing::random_tensor({8, 4}, 2)},    // 128
          {"model.layers.0.mlp.down_proj.weight", testing::random_tensor({4, 8}, 3)},  // 128
          {"model.norm.weight", testing::random_tensor({4}, 4).to_dtype(DType::kBF16)},  // 8
          {"lm_head.weight", testing::random_tensor({10, 4}, 5)}};                       // 160
}

void expect_source_holds(const WeightSource& source, const NamedTensors& tensors) {
  std::vector<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    names.push_back(name);
    auto got = source.get(name);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(same_bytes(*got, tensor)) << name;
    EXPECT_EQ(source.info(name)->shape, tensor.shape());
    EXPECT_TRUE(source.contains(name));
    EXPECT_TRUE(testing::tensors_close(*source.get_f32(name), tensor.to_dtype(DType::kF32), 0));
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(source.names(), names);
}

TEST(WeightSource, ReadsASingleFileDirectory) {
  const std::string dir = testing::make_temp_dir("io_ws_");
  const NamedTensors tensors = model_tensors();
  ASSERT_TRUE(write_sharded_safetensors(dir, tensors, 1 << 20).ok());
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors.index.json"));
  auto source = WeightSource::open(dir);
  ASSERT_TRUE(source.ok()) << source.status();
  expect_source_holds(*source, tensors);
  EXPECT_EQ(source->files().size(), 1u);
  EXPECT_EQ(source->files()[0]->metadata().at("format"), "pt");
}

TEST(WeightSource, ReadsShardsPackedInOrderUnderTheLimit) {
  const std::string dir = testing::make_temp_dir("io_ws_");
  const NamedTensors tensors = model_tensors();
  // 290 bytes a shard: [embed 160, up 128] [down 128, norm 8] [lm_head 160].
  ASSERT_TRUE(write_sharded_safetensors(dir, tensors, 290).ok());
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));
  auto index = nlohmann::json::parse(*read_file(dir + "/model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 584);
  EXPECT_EQ(index["weight_map"]["model.embed_tokens.weight"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["model.layers.0.mlp.up_proj.weight"],
            "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["model.norm.weight"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["lm_head.weight"], "model-00003-of-00003.safetensors");
  auto source = WeightSource::open(dir);
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ(source->files().size(), 3u);
  expect_source_holds(*source, tensors);
}

TEST(WeightSource, ATensorLargerThanTheLimitGetsItsOwnShard) {
  const std::string dir = testing::make_temp_dir("io_ws_");
  const NamedTensors tensors = model_tensors();
  ASSERT_TRUE(write_sharded_safetensors(dir, tensors, 100).ok());
  auto source = WeightSource::open(dir);
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ(source->files().size(), 5u);
  expect_source_holds(*source, tensors);
}

TEST(WeightSource, RewritingTheDirectoryReplacesTheOtherForm) {
  const std::string dir = testing::make_temp_dir("io_ws_");
  const NamedTensors tensors = model_tensors();
  ASSERT_TRUE(write_sharded_safetensors(dir, tensors, 290).ok());
  const NamedTensors fewer(tensors.begin(), tensors.begin() + 2);
  ASSERT_TRUE(write_sharded_safetensors(dir, fewer, 1 << 20).ok());
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors.index.json"));
  expect_source_holds(*WeightSource::open(dir), fewer);
  ASSERT_TRUE(write_sharded_safetensors(dir, tensors, 290).ok());
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));
  expect_source_holds(*WeightSource::open(dir), tensors);
}

// The fixture models were written by tests/fixtures (Python), independently of this writer.
TEST(WeightSource, OpensEveryFixtureModelWithTheShapesItsConfigImplies) {
  int models = 0;
  for (const auto& entry : fs::directory_iterator(testing::fixtures_dir() + "/models")) {
    const std::string dir = entry.path().string();
    if (!fs::exists(entry.path() / "config.json")) continue;
    ++models;
    auto config = load_model_config(dir);
    ASSERT_TRUE(config.ok()) << config.status();
    auto source = WeightSource::open(dir);
    ASSERT_TRUE(source.ok()) << source.status();
    const ModelConfig& c = *config;
    EXPECT_EQ(source->info("model.embed_tokens.weight")->shape,
              (Shape{c.vocab_size, c.hidden_size}))
        << dir;
    EXPECT_EQ(source->info("model.layers.0.self_attn.q_proj.weight")->shape,
              (Shape{c.num_attention_heads * c.head_dim, c.hidden_size}))
        << dir;
    EXPECT_EQ(source->contains("model.layers.0.self_attn.q_proj.bias"), c.attention_bias) << dir;
    EXPECT_EQ(source->contains("lm_head.weight"), !c.tie_word_embeddings) << dir;
    for (const std::string& name : source->names()) {
      auto value = source->get_f32(name);
      ASSERT_TRUE(value.ok()) << value.status();
      for (float v : value->to_floats()) ASSERT_TRUE(std::isfinite(v)) << dir << " " << name;
    }
  }
  EXPECT_GE(models, 1);
}

TEST(WeightSource, PrefersModelSafetensorsOverAnIndexLikeTransformers) {
  const std::string dir = testing::make_temp_dir("io_ws_");
  ASSERT_TRUE(write_sharded_safetensors(dir, model_tensors(), 290).ok());
  const Tensor t = Tensor::from_floats({1}, {1});
  ASSERT_TRUE(write_safetensors(dir + "/model.safetensors", {{"single", t}}).ok());
  auto source = WeightSource::open(dir);
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ(source->names(), std::vector<std::string>{"single"});
}

void expect_source_fails(const std::string& dir, const std::string& problem) {
  auto source = WeightSource::open(dir);
  ASSERT_FALSE(source.ok()) << "expected: " << problem;
  EXPECT_THAT(std::string(source.status().message()), HasSubstr(problem));
}

TEST(WeightSourceBadInput, MissingDirectoryOrWeights) {
  const std::string dir = testing::make_temp_dir("io_ws_");
  expect_source_fails(dir + "/nowhere", "model directory " + dir + "/nowhere does not exist");
  expect_source_fails(dir, "no model.safetensors or model.safetensors.index.json in " + dir);
  ASSERT_TRUE(write_file_atomic(dir + "/file", "x").ok());
  expect_source_fails(dir + "/file", dir + "/file is not a directory");
}

TEST(WeightSourceBadInput, NameNotFoundNamesTheDirectory) {
  const std::string dir = testing::make_temp_dir("io_ws_");
  ASSERT_TRUE(write_sharded_safetensors(dir, {{"a", Tensor::from_floats({1}, {1})}}, 1024).ok());
  auto source = WeightSource::open(dir);
  ASSERT_TRUE(source.ok());
  auto missing = source->get("model.norm.weight");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("tensor 'model.norm.weight' not found in " + dir));
  EXPECT_FALSE(source->info("model.norm.weight").ok());
  EXPECT_FALSE(source->contains("model.norm.weight"));
}

TEST(WeightSourceBadInput, IndexThatDisagreesWithTheShards) {
  const std::string dir = testing::make_temp_dir("io_ws_");
  const Tensor t = Tensor::from_floats({1, 2}, {2});
  ASSERT_TRUE(write_safetensors(dir + "/s1.safetensors", {{"a", t}, {"b", t}}).ok());
  ASSERT_TRUE(write_safetensors(dir + "/s2.safetensors", {{"b", t}}).ok());
  const std::string index = dir + "/model.safetensors.index.json";
  auto write_index = [&](const std::string& weight_map) {
    ASSERT_TRUE(
        write_file_atomic(index, R"({"metadata": {}, "weight_map": )" + weight_map + "}").ok());
  };
  write_index(R"({"a": "s1.safetensors", "c": "s3.safetensors"})");
  expect_source_fails(dir, "shard s3.safetensors (holding 'c') is missing from " + dir);
  write_index(R"({"a": "s1.safetensors", "b": "s2.safetensors"})");
  expect_source_fails(
      dir, "tensor 'b' is in both " + dir + "/s1.safetensors and " + dir + "/s2.safetensors");
  ASSERT_TRUE(write_safetensors(dir + "/s2.safetensors", {{"c", t}}).ok());
  write_index(R"({"a": "s2.safetensors", "c": "s2.safetensors"})");
  expect_source_fails(dir,
                      "weight_map puts 'a' in s2.safetensors, but that shard does not contain it");
  write_index(R"({"a": "../s1.safetensors"})");
  expect_source_fails(dir, "expected a file name inside " + dir);
  write_index(R"(["a"])");
  expect_source_fails(dir, "needs an object \"weight_map\"");
  ASSERT_TRUE(write_file_atomic(index, "{oops").ok());
  expect_source_fails(dir, index + ": not valid JSON");
}

TEST(WeightSourceBadInput, ACorruptShardNamesTheShard) {
  const std::string dir = testing::make_temp_dir("io_ws_");
  ASSERT_TRUE(write_sharded_safetensors(dir, model_tensors(), 290).ok());
  const std::string shard = dir + "/model-00002-of-00003.safetensors";
  ASSERT_TRUE(write_file_atomic(shard, "garbage!garbage!").ok());
  expect_source_fails(dir, shard + ": header length");
}

TEST(WriteShardedSafetensors, RejectsAZeroLimitAndRepeatedNames) {
  const std::string dir = testing::make_temp_dir("io_ws_");
  const Tensor t = Tensor::from_floats({1}, {1});
  EXPECT_FALSE(write_sharded_safetensors(dir, {{"a", t}}, 0).ok());
  absl::Status repeated = write_sharded_safetensors(dir, {{"a", t}, {"b", t}, {"a", t}}, 4);
  EXPECT_THAT(std::string(repeated.message()), HasSubstr("'a' is reserved or repeated"));
  EXPECT_TRUE(fs::is_empty(dir));
}

}  // namespace
}  // namespace weft::io
