#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/io/file_util.h"
#include "runtime/io/sha256.h"
#include "tests/support/test_util.h"

namespace weft::io {
namespace {

using ::testing::HasSubstr;

// FIPS 180-4 / NIST test vectors.
TEST(Sha256, MatchesNistVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, StreamingInUnevenPiecesEqualsOneShot) {
  std::string message;
  for (int i = 0; i < 1000; ++i) message.push_back(static_cast<char>(i * 7 + 3));
  const std::string expected = sha256_hex(message);
  for (size_t piece : {1u, 3u, 55u, 56u, 63u, 64u, 65u, 999u}) {
    Sha256 hasher;
    for (size_t at = 0; at < message.size(); at += piece) {
      hasher.update(std::string_view(message).substr(at, piece));
    }
    EXPECT_EQ(hasher.hex_digest(), expected) << "piece " << piece;
  }
}

TEST(Sha256, FileDigestEqualsDigestOfItsBytes) {
  const std::string dir = testing::make_temp_dir("io_sha_");
  // Larger than one 1 MiB read, so the file is hashed in several chunks.
  std::string bytes(3 << 20, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 31) >> 3);
  ASSERT_TRUE(write_file_atomic(dir + "/blob", bytes).ok());
  auto digest = sha256_file(dir + "/blob");
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(*digest, sha256_hex(bytes));

  auto missing = sha256_file(dir + "/absent");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(dir + "/absent"));
}

}  // namespace
}  // namespace weft::io
