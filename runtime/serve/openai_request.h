// Reading OpenAI request bodies for the server (docs/serving.md): the fields each endpoint
// accepts, their types and ranges, prompts in every form (text through the tokenizer, chat
// through the chat template, token ids), turned into engine requests. A bad body is an ApiError
// that the server answers with an OpenAI-shaped error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "runtime/serve/engine.h"
#include "runtime/serve/tokenizer.h"

namespace weft::serve {

// Ordered: request bodies keep the client's key order (tool schemas reach the chat template as
// sent), and responses list their fields in the order they are written.
using Json = nlohmann::ordered_json;

// An error that becomes an OpenAI-shaped response.
struct ApiError {
  ApiError(int status, std::string message, std::string param = "",
           std::string type = "invalid_request_error", std::string code = "")
      : status(status),
        message(std::move(message)),
        param(std::move(param)),
        type(std::move(type)),
        code(std::move(code)) {}
  int status;
  std::string message;
  std::string param;
  std::string type;
  std::string code;
};

// {"error": {"message", "type", "param", "code"}}.
Json error_body(const ApiError& e);

struct Prompt {
  std::vector<int64_t> ids;
  std::string text;  // for echo (empty for id prompts without a tokenizer)
};

struct ParsedRequest {
  bool chat = false;
  std::vector<Prompt> prompts;
  GenerationParams params;
  int n = 1;
  bool stream = false;
  bool include_usage = false;
  bool echo = false;
  bool return_token_ids = false;
  int logprobs = -1;  // completions: top-k count; chat: top_logprobs (>= 0 when asked)
};

class RequestReader {
 public:
  // `tokenizer` may be null (token-id prompts only); `chat_template` "" refuses chat requests.
  RequestReader(const Engine& engine, const Tokenizer* tokenizer, std::string model_name,
                std::string chat_template)
      : engine_(engine),
        tok_(tokenizer),
        model_name_(std::move(model_name)),
        chat_template_(std::move(chat_template)) {}

  // Throws ApiError naming the field (OpenAI's `param`) and the problem.
  [[nodiscard]] ParsedRequest parse(const Json& body, bool chat) const;
  // POST /tokenize: {"prompt", "add_special_tokens"} or {"messages"} (through the template).
  [[nodiscard]] std::vector<int64_t> tokenize(const Json& body) const;
  // POST /detokenize: {"tokens"}, each in the vocabulary.
  [[nodiscard]] std::vector<int64_t> detokenize_ids(const Json& body) const;
  [[nodiscard]] std::vector<int64_t> encode(const std::string& text, bool add_special) const;
  // The ids' text with special tokens kept ("" without a tokenizer).
  [[nodiscard]] std::string decode(const std::vector<int64_t>& ids) const;

 private:
  const Engine& engine_;
  const Tokenizer* tok_;
  std::string model_name_;
  std::string chat_template_;
};

}  // namespace weft::serve
