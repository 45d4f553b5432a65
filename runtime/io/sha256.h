// SHA-256 (FIPS 180-4), for checkpoint checksums. Digests are lower-case hex.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace weft::io {

// Streaming hasher: update() any number of times, then hex_digest() once.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t bytes);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  [[nodiscard]] std::array<uint8_t, 32> digest();
  [[nodiscard]] std::string hex_digest();

 private:
  void compress(const uint8_t* block);  // one 64-byte block

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string sha256_hex(std::string_view bytes);
// Streams the file in fixed-size reads; the error names the path.
absl::StatusOr<std::string> sha256_file(const std::string& path);

}  // namespace weft::io
