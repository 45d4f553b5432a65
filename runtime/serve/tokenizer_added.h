// Hugging Face's AddedVocabulary split: added tokens are cut out of the text (leftmost-longest,
// with their single_word / lstrip / rstrip rules) before the normalizer and pre-tokenizer run.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace weft::serve {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

// A piece of text: [begin, end) bytes, and the added token's id or -1 for ordinary text.
struct TextSegment {
  size_t begin;
  size_t end;
  int32_t id;
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher();
  void add(const AddedToken& token);
  [[nodiscard]] bool empty() const { return tokens_.empty(); }
  // HF AddedVocabulary::find_matches: `text` as ordinary segments and matched tokens.
  void split(std::string_view text, std::vector<TextSegment>& out) const;

 private:
  int32_t child(int32_t node, unsigned char byte) const;

  std::vector<AddedToken> tokens_;
  std::vector<int32_t> terminal_;                 // per trie node: index in tokens_ or -1
  absl::flat_hash_map<uint64_t, int32_t> edges_;  // (node << 8 | byte) -> node
  bool first_byte_[256] = {};
};

}  // namespace weft::serve
