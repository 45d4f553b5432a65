// The BPE model of a Hugging Face tokenizer.json: vocab, ranked merges, byte_fallback, unk
// handling and a per-word cache. For a byte-level tokenizer the model works on raw bytes (the
// vocab is keyed by the bytes a token stands for), so words skip the byte-to-character mapping.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace weft::serve {

// model.vocab and model.merges, taken out of tokenizer.json by parse_tokenizer_json's streaming
// parser: a JSON DOM of Gemma's 262k-token vocab and 515k merges would cost seconds.
struct BpeTables {
  bool has_vocab = false;
  std::vector<std::pair<std::string, int64_t>> vocab;
  bool has_merges = false;
  std::vector<std::string> merges;  // "a b" lines, or a, b, a, b, ... for [a, b] pairs
  bool merges_are_pairs = false;
  std::string error;  // what the parser found malformed in them, if anything
};

// Parses tokenizer.json: the document without model.vocab and model.merges, which go to
// `tables`. Errors name the offset of bad JSON.
absl::StatusOr<nlohmann::json> parse_tokenizer_json(const std::string& text, BpeTables& tables);

class BpeModel {
 public:
  // `model` is tokenizer.json's "model" object (less vocab and merges, which are in `tables`);
  // `byte_level` when a ByteLevel pre-tokenizer maps bytes to characters before the model.
  static absl::StatusOr<std::unique_ptr<BpeModel>> from_json(const nlohmann::json& model,
                                                             BpeTables tables, bool byte_level);

  // Appends the ids of one pre-tokenized word (raw bytes for a byte-level model).
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  [[nodiscard]] std::optional<int32_t> token_to_id(std::string_view token) const;
  [[nodiscard]] const std::string* id_to_token(int32_t id) const;
  [[nodiscard]] int32_t vocab_count() const { return static_cast<int32_t>(vocab_.size()); }
  [[nodiscard]] int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }

 private:
  BpeModel() = default;
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  [[nodiscard]] std::optional<int32_t> symbol_id(std::string_view s) const;

  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  absl::flat_hash_map<std::string, int32_t> vocab_;       // token as written in the file
  absl::flat_hash_map<std::string, int32_t> byte_vocab_;  // byte-level: token as raw bytes
  std::vector<std::string> id_to_token_;                  // "" for ids the vocab skips
  absl::flat_hash_map<uint64_t, Merge> merges_;
  bool byte_level_ = false;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::optional<int32_t> unk_id_;
  std::array<int32_t, 256> byte_token_ids_{};  // id of "<0xXX>", -1 if absent
  std::array<int32_t, 256>
      byte_symbol_ids_{};  // byte-level: id of the one-byte token, -1 if absent

  static constexpr size_t kCacheCapacity = 200000;
  static constexpr size_t kMaxCachedWordBytes = 256;
  mutable std::mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace weft::serve
