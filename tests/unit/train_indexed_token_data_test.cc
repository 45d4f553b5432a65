// The prepared token data (runtime/io/indexed_tokens.h) and its training samples
// (runtime/train/indexed_token_data.h) on small hand-made directories whose windows and orders
// can be listed by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

#include "nlohmann/json.hpp"
#include "runtime/io/indexed_tokens.h"
#include "runtime/io/sha256.h"
#include "runtime/train/indexed_token_data.h"
#include "tests/support/test_util.h"

namespace weft::train {
namespace {

namespace fs = std::filesystem;
using testing::make_temp_dir;

std::string bytes_of(const auto& values) {
  return std::string(reinterpret_cast<const char*>(values.data()),
                     values.size() * sizeof(values[0]));
}

void write(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// A directory written byte by byte as docs/architecture.md describes the format: uint16 ids
// 0, 1, ..., n-1 (vocabulary 1000) in documents of `doc_len` ids.
std::string handmade_dir(int n, int doc_len) {
  const std::string dir = make_temp_dir("weft_indexed");
  std::vector<uint16_t> ids(n);
  std::iota(ids.begin(), ids.end(), uint16_t{0});
  std::vector<int64_t> offsets;
  for (int64_t at = 0; at < n; at += doc_len) offsets.push_back(at);
  offsets.push_back(n);
  write(dir + "/tokens.bin", bytes_of(ids));
  write(dir + "/doc_offsets.bin", bytes_of(offsets));
  const nlohmann::json index = {{"format", "weft.indexed_tokens"},
                                {"version", 1},
                                {"dtype", "uint16"},
                                {"vocab_size", 1000},
                                {"max_id", n - 1},
                                {"num_documents", offsets.size() - 1},
                                {"num_tokens", n},
                                {"eos_id", nullptr},
                                {"tokenizer", "handmade"},
                                {"source", "handmade.jsonl"},
                                {"text_key", "text"},
                                {"tokens_file", "tokens.bin"},
                                {"tokens_sha256", io::sha256_hex(bytes_of(ids))},
                                {"doc_offsets_file", "doc_offsets.bin"},
                                {"doc_offsets_sha256", io::sha256_hex(bytes_of(offsets))}};
  write(dir + "/index.json", index.dump());
  return dir;
}

std::unique_ptr<IndexedTokenData> open_ok(const std::string& dir, int64_t seq_len, uint64_t seed) {
  absl::StatusOr<std::unique_ptr<IndexedTokenData>> data =
      IndexedTokenData::open(dir, seq_len, seed);
  EXPECT_TRUE(data.ok()) << data.status();
  return data.ok() ? *std::move(data) : nullptr;
}

// Sample i of ids 0..n-1 at seq_len 4 is the window [3i, 3i + 4).
std::vector<int64_t> window(int64_t sample) {
  return {3 * sample, 3 * sample + 1, 3 * sample + 2, 3 * sample + 3};
}

std::vector<int64_t> row(const Tensor& t, int64_t r) {
  const std::vector<int64_t> all = t.to_ints();
  return {all.begin() + r * t.dim(1), all.begin() + (r + 1) * t.dim(1)};
}

TEST(ShuffledOrder, IsAPermutationFixedByTheSeed) {
  for (int64_t n : {1, 2, 7, 100}) {
    std::vector<int64_t> order = shuffled_order(n, 5);
    EXPECT_EQ(order, shuffled_order(n, 5));
    std::sort(order.begin(), order.end());
    std::vector<int64_t> want(n);
    std::iota(want.begin(), want.end(), int64_t{0});
    EXPECT_EQ(order, want) << n;
  }
  EXPECT_NE(shuffled_order(100, 5), shuffled_order(100, 6));
  // Pinned: the order is part of the data contract (a checkpoint resumes into it), so a change of
  // the algorithm must show here.
  EXPECT_EQ(shuffled_order(8, 0), (std::vector<int64_t>{4, 5, 2, 0, 7, 1, 3, 6}));
}

TEST(IndexedTokenData, SamplesAreWindowsOverlappingByOneInShuffledOrder) {
  // 31 ids at seq_len 4: samples [0,4), [3,7), ..., [27,31): (31 - 1) / 3 = 10.
  auto data = open_ok(handmade_dir(31, 5), 4, 9);
  ASSERT_NE(data, nullptr);
  EXPECT_EQ(data->num_sequences(), 10);
  EXPECT_EQ(data->seq_len(), 4);
  EXPECT_EQ(data->max_id(), 30);
  EXPECT_EQ(data->shuffle_seed(), 9u);
  const Tensor epoch = data->sequences(0, 10);  // [10, 4]
  ASSERT_EQ(epoch.shape(), (Shape{10, 4}));
  const std::vector<int64_t> order = shuffled_order(10, 9);
  EXPECT_EQ(data->epoch_order(0), order);
  for (int64_t p = 0; p < 10; ++p) EXPECT_EQ(row(epoch, p), window(order[p])) << p;
  // A position's sample does not depend on the batch that reads it.
  EXPECT_EQ(row(data->sequences(7, 1), 0), window(order[7]));
  // An id that ends no whole window (a 32nd one would not make an 11th sample) is dropped.
  EXPECT_EQ(open_ok(handmade_dir(33, 5), 4, 9)->num_sequences(), 10);
}

TEST(IndexedTokenData, EachEpochIsReshuffledFromSeedPlusEpoch) {
  auto data = open_ok(handmade_dir(31, 5), 4, 9);
  ASSERT_NE(data, nullptr);
  // Positions 8..12 straddle epochs 0 and 1: epoch e visits shuffled_order(10, 9 + e).
  const Tensor batch = data->sequences(8, 5);
  const std::vector<int64_t> e0 = shuffled_order(10, 9);
  const std::vector<int64_t> e1 = shuffled_order(10, 10);
  EXPECT_NE(e0, e1);
  EXPECT_EQ(row(batch, 0), window(e0[8]));
  EXPECT_EQ(row(batch, 1), window(e0[9]));
  for (int64_t p = 0; p < 3; ++p) EXPECT_EQ(row(batch, 2 + p), window(e1[p])) << p;
  // Epoch 1 of seed 9 is epoch 0 of seed 10.
  auto seed10 = open_ok(handmade_dir(31, 5), 4, 10);
  ASSERT_NE(seed10, nullptr);
  EXPECT_EQ(data->sequences(10, 10).to_ints(), seed10->sequences(0, 10).to_ints());
}

TEST(IndexedTokens, WriterRoundTripsBothDtypes) {
  for (int64_t vocab : {int64_t{65536}, int64_t{65537}}) {
    SCOPED_TRACE(vocab);
    const std::string dir = make_temp_dir("weft_indexed_write");
    io::TokenIndex meta;
    meta.vocab_size = vocab;
    meta.eos_id = 2;
    meta.tokenizer = "tok";
    auto writer = io::IndexedTokensWriter::create(dir, meta);
    ASSERT_TRUE(writer.ok()) << writer.status();
    const std::vector<std::vector<int32_t>> docs = {{1, 7, 2}, {}, {65535, 2}};
    for (const auto& doc : docs) ASSERT_TRUE((*writer)->add_document(doc).ok());
    EXPECT_FALSE((*writer)->add_document(std::vector<int32_t>{static_cast<int32_t>(vocab)}).ok());
    ASSERT_TRUE((*writer)->finish().ok());
    auto read = io::IndexedTokens::open(dir);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_TRUE(read->verify().ok()) << read->verify();
    const io::TokenIndex& x = read->index();
    EXPECT_EQ(x.dtype, vocab == 65536 ? io::TokenDtype::kU16 : io::TokenDtype::kU32);
    EXPECT_EQ(fs::file_size(dir + "/tokens.bin"), 5u * (vocab == 65536 ? 2 : 4));
    EXPECT_EQ(x.num_documents, 3);
    EXPECT_EQ(x.max_id, 65535);
    EXPECT_EQ(std::vector<int64_t>(read->doc_offsets().begin(), read->doc_offsets().end()),
              (std::vector<int64_t>{0, 3, 3, 5}));
    std::vector<int64_t> ids(5);
    EXPECT_EQ(read->read(0, 5, ids.data()), 65535);
    EXPECT_EQ(ids, (std::vector<int64_t>{1, 7, 2, 65535, 2}));
  }
}

void expect_error(const absl::Status& status, const std::string& needle) {
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find(needle), std::string::npos) << status;
}

absl::Status open_status(const std::string& dir, int64_t seq_len = 4) {
  return IndexedTokenData::open(dir, seq_len, 0).status();
}

// Flips the bits of byte `at` of `path`.
void flip_byte(const std::string& path, int64_t at) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(at);
  const char c = static_cast<char>(f.get() ^ 0xFF);
  f.seekp(at);
  f.put(c);
}

TEST(IndexedTokenData, DamagedOrUnfitDataIsAnErrorNamingTheFile) {
  std::string dir = handmade_dir(31, 5);
  fs::resize_file(dir + "/tokens.bin", 60);  // one id short
  expect_error(open_status(dir), "tokens.bin holds 60 bytes; index.json says 62");

  dir = handmade_dir(31, 5);
  fs::resize_file(dir + "/doc_offsets.bin", 8 * 3);
  expect_error(open_status(dir), "doc_offsets.bin holds 24 bytes");

  dir = handmade_dir(31, 5);
  fs::remove(dir + "/index.json");
  expect_error(open_status(dir), "holds no index.json");

  dir = handmade_dir(31, 5);
  write(dir + "/index.json", "{\"format\": \"weft.indexed_tokens\", \"version\": 1}");
  expect_error(open_status(dir), "index.json: \"dtype\" is missing");

  expect_error(open_status(handmade_dir(31, 5), 32), "--seq-len 32 is longer than the data");
  expect_error(open_status(handmade_dir(31, 5), 1), "--seq-len 1 must be at least 2");

  // Offsets that go backwards: caught on open. Bytes changed in place: caught by verify().
  dir = handmade_dir(31, 5);
  flip_byte(dir + "/doc_offsets.bin", 8);
  expect_error(open_status(dir), "doc_offsets.bin: document");
  dir = handmade_dir(31, 5);
  flip_byte(dir + "/tokens.bin", 3);  // id 1's high byte: 0xFF01
  auto tokens = io::IndexedTokens::open(dir);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  expect_error(tokens->verify(), "tokens.bin: SHA-256");
  // A training read of the damaged id stops rather than train on an id the index never had.
  auto data = open_ok(dir, 4, 0);
  ASSERT_NE(data, nullptr);
  EXPECT_DEATH((void)data->sequences(0, 10), "tokens.bin: id 65281 .* above the index's max_id 30");
}

}  // namespace
}  // namespace weft::train
