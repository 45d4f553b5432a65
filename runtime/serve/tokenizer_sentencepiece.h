// libsentencepiece behind a header of std types only: sentencepiece_processor.h declares its own
// absl::string_view, which clashes with Abseil's, so only tokenizer_sentencepiece.cc includes it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace weft::serve {

class SentencePieceModel {
 public:
  // nullptr with `error` set when `path` is not a sentencepiece model.
  static std::unique_ptr<SentencePieceModel> load(const std::string& path, std::string* error);
  ~SentencePieceModel();

  [[nodiscard]] std::vector<int32_t> encode(std::string_view text) const;
  [[nodiscard]] std::string decode(const std::vector<int32_t>& ids) const;
  [[nodiscard]] int size() const;
  [[nodiscard]] std::string id_to_piece(int32_t id) const;
  [[nodiscard]] int32_t piece_to_id(std::string_view piece) const;  // unk id when unknown
  [[nodiscard]] bool is_special(int32_t id) const;                  // control or unknown
  [[nodiscard]] int32_t bos_id() const;                             // -1 when none
  [[nodiscard]] int32_t eos_id() const;

 private:
  SentencePieceModel();
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace weft::serve
