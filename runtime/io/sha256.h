// SHA-256 for checkpoint checksums, computed by OpenSSL (EVP; SHA-NI or AVX2 where the CPU has
// them). Digests are lower-case hex.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

struct evp_md_ctx_st;

namespace weft::io {

// Streaming hasher: update() any number of times, then digest() or hex_digest() once.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const void* data, size_t bytes);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  [[nodiscard]] std::array<uint8_t, 32> digest();
  [[nodiscard]] std::string hex_digest();

 private:
  evp_md_ctx_st* ctx_;  // EVP_MD_CTX, owned
};

std::string sha256_hex(std::string_view bytes);
// Streams the file in fixed-size reads; the error names the path.
absl::StatusOr<std::string> sha256_file(const std::string& path);

}  // namespace weft::io
