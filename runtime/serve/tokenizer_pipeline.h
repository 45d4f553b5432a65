// The stages of a Hugging Face tokenizer.json around its model: normalizer, pre-tokenizer,
// post-processor and decoder, each parsed from its JSON object and applied as the Rust
// tokenizers library applies it.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace weft::serve {

// A PCRE2 pattern (UTF + UCP, JIT-compiled), or a literal string.
class Regex {
 public:
  static absl::StatusOr<std::shared_ptr<const Regex>> compile(const std::string& pattern,
                                                              bool literal);
  ~Regex();
  // Calls on_match(start, end) for each non-overlapping match, left to right.
  template <typename F>
  void for_each_match(std::string_view s, F&& on_match) const {
    size_t start = 0;
    while (start <= s.size()) {
      size_t begin = 0, end = 0;
      if (!find(s, start, begin, end)) return;
      on_match(begin, end);
      start = end > begin ? end : end + 1;  // an empty match moves one byte on
    }
  }
  // `s` with every match replaced by `content`.
  [[nodiscard]] std::string replace_all(std::string_view s, std::string_view content) const;

 private:
  Regex() = default;
  bool find(std::string_view s, size_t start, size_t& begin, size_t& end) const;
  void* code_ = nullptr;  // pcre2_code_8
};

// Pattern {"String": s} or {"Regex": r} as HF serializes it.
absl::StatusOr<std::shared_ptr<const Regex>> parse_pattern(const nlohmann::json& pattern);

// A "Sequence" stage (Normalizer, PreTokenizer or Decoder): its members' steps in order.
template <typename Stage>
absl::StatusOr<Stage> sequence_of(const nlohmann::json& members);

class Normalizer {
 public:
  // `config` may be null (no normalizer).
  static absl::StatusOr<Normalizer> from_json(const nlohmann::json& config);
  [[nodiscard]] std::string apply(std::string_view text) const;
  [[nodiscard]] bool empty() const { return steps_.empty(); }

  struct Step {
    std::string type;
    std::string content;  // Prepend: the prefix; Replace: the replacement
    std::shared_ptr<const Regex> pattern;
    bool left = false, right = false;  // Strip
  };

 private:
  template <typename Stage>
  friend absl::StatusOr<Stage> sequence_of(const nlohmann::json& members);
  std::vector<Step> steps_;
};

// Splits a normalized segment into the words the model sees.
class PreTokenizer {
 public:
  static absl::StatusOr<PreTokenizer> from_json(const nlohmann::json& config);
  // Appends the words of `text`; `at_text_start` when `text` begins the encoded input (for
  // Metaspace's prepend_scheme "first"). Words that needed new bytes live in `arena`.
  void apply(std::string_view text, bool at_text_start, std::vector<std::string_view>& words,
             std::deque<std::string>& arena) const;
  // True when a ByteLevel step maps bytes to characters before the model.
  [[nodiscard]] bool byte_level() const;

  struct Step {
    std::string type;
    std::shared_ptr<const Regex> pattern;
    std::string behavior;
    bool invert = false;
    bool add_prefix_space = false;
    bool use_regex = false;
    std::string replacement;  // Metaspace
    std::string prepend_scheme;
    bool split = true;
  };

 private:
  template <typename Stage>
  friend absl::StatusOr<Stage> sequence_of(const nlohmann::json& members);
  std::vector<Step> steps_;
};

// Adds special tokens around an encoded sequence (TemplateProcessing and friends).
class PostProcessor {
 public:
  static absl::StatusOr<PostProcessor> from_json(const nlohmann::json& config);
  [[nodiscard]] std::vector<int32_t> apply(std::vector<int32_t> ids) const;

 private:
  std::vector<int32_t> prefix_;
  std::vector<int32_t> suffix_;
};

class Decoder {
 public:
  static absl::StatusOr<Decoder> from_json(const nlohmann::json& config);
  // HF Decoder::decode: the chain of steps over the tokens, then their concatenation (tokens
  // joined by " " when the file has no decoder).
  [[nodiscard]] std::string decode(std::vector<std::string> tokens) const;

  struct Step {
    std::string type;
    std::shared_ptr<const Regex> pattern;
    std::string content;
    int start = 0, stop = 0;  // Strip
    bool prepend = true;      // Metaspace: prepend_scheme != "never"
    std::string replacement;  // Metaspace
  };

 private:
  template <typename Stage>
  friend absl::StatusOr<Stage> sequence_of(const nlohmann::json& members);
  bool present_ = false;
  std::vector<Step> steps_;
};

}  // namespace weft::serve
