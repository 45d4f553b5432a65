// Text <-> token ids, byte-exact with Hugging Face tokenizers (the Rust library) on the
// tokenizer.json files Llama 2/3, Mistral, Qwen 2/3 and Gemma ship; a sentencepiece
// tokenizer.model where that is all a model directory has. Encode runs: added tokens cut out of
// the raw text -> normalizer (per piece) -> pre-tokenizer -> BPE per word -> post-processor.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace weft::serve {

class Tokenizer {
 public:
  // Reads DIR/tokenizer.json (+ tokenizer_config.json when present); otherwise DIR/tokenizer.model
  // via sentencepiece. NotFound naming the files when neither exists; InvalidArgument naming the
  // file and the problem for malformed files.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> load(const std::string& model_dir);
  ~Tokenizer();

  // HF encode(text, add_special_tokens).ids. Invalid UTF-8 is first repaired with U+FFFD.
  [[nodiscard]] std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;
  // HF decode(ids, skip_special_tokens); invalid UTF-8 rendered as HF renders it (U+FFFD). Ids
  // outside the vocab are dropped, as HF drops them.
  [[nodiscard]] std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const;
  [[nodiscard]] int vocab_size() const;  // highest id + 1 over vocab and added tokens
  [[nodiscard]] std::optional<std::string> id_to_token(int32_t id) const;
  [[nodiscard]] std::optional<int32_t> token_to_id(std::string_view token) const;
  [[nodiscard]] bool is_special(int32_t id) const;
  // From tokenizer_config.json ("" if none).
  [[nodiscard]] const std::string& bos_token() const { return bos_token_; }
  [[nodiscard]] const std::string& eos_token() const { return eos_token_; }
  // eos_token's id, plus generation_config.json's eos_token_id(s) when that file lists others.
  [[nodiscard]] std::vector<int32_t> eos_token_ids() const { return eos_token_ids_; }
  // tokenizer_config.json "chat_template" (a string, or the "default" of a list of {name,
  // template}); else DIR/chat_template.jinja; "" when neither.
  [[nodiscard]] const std::string& chat_template() const { return chat_template_; }

  struct Pipeline;  // tokenizer.json's stages (tokenizer.cc)

 private:
  Tokenizer();
  absl::Status read_config(const std::string& model_dir);

  std::unique_ptr<Pipeline> hf_;                  // tokenizer.json, or
  std::unique_ptr<class SentencePieceModel> sp_;  // tokenizer.model
  bool sp_add_bos_ = true;
  bool sp_add_eos_ = false;
  std::string bos_token_;
  std::string eos_token_;
  std::vector<int32_t> eos_token_ids_;
  std::string chat_template_;
};

// Incremental detokenizer for streaming. push() returns only newly completed text and never a
// partial UTF-8 character; the concatenation of every push() and finish() equals decode(all
// ids) whenever that decode is valid UTF-8. Prefix-diff over a sliding window, as vLLM does:
// emit decode(window + new) minus decode(window), which stays right for decoders that strip a
// leading space.
class StreamDecoder {
 public:
  StreamDecoder(const Tokenizer& tok, bool skip_special_tokens);
  std::string push(int32_t id);
  // The text still held back (an incomplete character at the end renders as U+FFFD).
  std::string finish();

 private:
  // decode() of the window before the newest ids, and of the whole window.
  [[nodiscard]] std::pair<std::string, std::string> decode_window() const;
  const Tokenizer& tok_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // window start
  size_t read_offset_ = 0;    // ids before this have been emitted
};

}  // namespace weft::serve
