#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/io/file_util.h"
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
  return {{"f32", patterned({2, 3}, DType::kF32, 1)},  {"bf16", patterned({4}, DType::kBF16, 2)},
          {"f16", patterned({3, 2}, DType::kF16, 3)},  {"i32", patterned({5}, DType::kI32, 4)},
          {"i64", patterned({2, 2}, DType::kI64, 5)},  {"u8", patterned({7}, DType::kU8, 6)},
          {"scalar", patterned({}, DType::kF32, 7)}, {"empty", patterned({0, 3}, DType::kF32, 8)}};
}

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  const std::string dir = testing::make_temp_dir("io_st_");
  const std::string path = dir + "/all.safetensors";
  const NamedTensors tensors = every_dtype();
  ASSERT_TRUE(write_safetensors(path, tensors, {{"format", "pt"}, {"step", "7"}}).ok());

  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->names(), (std::vector<std::string>{"bf16", "empty", "f16", "f32", "i32",
                                                         "i64", "scalar", "u8"}));
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
  EXPECT_THAT(std::string(repeated.message()), HasSubstr("tensor name 'a' is reserved or repeated"));
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
  expect_open_fails(write_raw(dir, "empty", "", "", 0).substr(0), "");  // valid: no tensors
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
  expect_open_fails(cut, "tensor 'w' data_offsets [0,32] are out of range: the data section holds 28");
}
