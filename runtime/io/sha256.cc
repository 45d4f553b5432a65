#include "runtime/io/sha256.h"

#include <openssl/evp.h>

#include "runtime/core/check.h"
#include "runtime/core/status.h"
#include "runtime/io/file_util.h"

namespace weft::io {

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  WEFT_CHECK(ctx_ != nullptr && EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) == 1)
      << "OpenSSL cannot start a SHA-256 digest";
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::update(const void* data, size_t bytes) {
  WEFT_CHECK(EVP_DigestUpdate(ctx_, data, bytes) == 1) << "OpenSSL SHA-256 update failed";
}

std::array<uint8_t, 32> Sha256::digest() {
  std::array<uint8_t, 32> out{};
  unsigned int length = 0;
  WEFT_CHECK(EVP_DigestFinal_ex(ctx_, out.data(), &length) == 1 && length == out.size())
      << "OpenSSL SHA-256 final failed";
  return out;
}

std::string Sha256::hex_digest() {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (uint8_t byte : digest()) {
    hex.push_back(kHex[byte >> 4]);
    hex.push_back(kHex[byte & 0xf]);
  }
  return hex;
}

std::string sha256_hex(std::string_view bytes) {
  Sha256 hasher;
  hasher.update(bytes);
  return hasher.hex_digest();
}

absl::StatusOr<std::string> sha256_file(const std::string& path) {
  Sha256 hasher;
  WEFT_RETURN_IF_ERROR(
      read_file_chunks(path, [&](std::string_view chunk) { hasher.update(chunk); }));
  return hasher.hex_digest();
}

}  // namespace weft::io
