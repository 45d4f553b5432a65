// UTF-8 helpers the tokenizer shares: code point iteration, GPT-2's byte-to-character table,
// Rust's from_utf8_lossy (the way Hugging Face renders invalid UTF-8) and ICU normalization.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace weft::serve::unicode {

// Length in bytes of the UTF-8 sequence that starts with `lead` (1 for a stray byte).
inline int utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xF0) return 4;
  if (lead >= 0xE0) return 3;
  if (lead >= 0xC0) return 2;
  return 1;
}

// Decodes the code point at s[pos] (valid UTF-8 assumed; a stray byte decodes as itself) and
// advances pos past it.
char32_t next_code_point(std::string_view s, size_t& pos);
void append_utf8(std::string& out, char32_t cp);

// GPT-2's bytes_to_unicode(): printable bytes map to themselves, the rest to U+0100 onwards.
const std::array<char32_t, 256>& byte_to_char();
// The inverse; -1 for a code point that is not in the table.
int char_to_byte(char32_t cp);

bool is_valid_utf8(std::string_view s);
// Replaces every maximal ill-formed subpart with U+FFFD, as Rust's String::from_utf8_lossy.
std::string to_valid_utf8(std::string_view bytes);
// True when `s` is empty or ends in the middle of a UTF-8 sequence or with U+FFFD.
bool ends_with_replacement(std::string_view s);

bool is_whitespace(char32_t cp);    // Unicode White_Space (Rust char::is_whitespace)
bool is_alphanumeric(char32_t cp);  // Rust char::is_alphanumeric

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
// `s` in the normal form; ASCII text is returned unchanged without calling ICU.
std::string normalize(std::string_view s, NormalForm form);
std::string to_lower(std::string_view s);  // Rust's str::to_lowercase

}  // namespace weft::serve::unicode
