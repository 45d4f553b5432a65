#include "runtime/serve/openai_request.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "runtime/serve/jinja.h"

namespace weft::serve {

namespace {

// The fields each endpoint accepts; anything else is a 400 naming it. Some are accepted only at
// their neutral value (penalties 0, best_of 1) since the engine does not implement them.
bool accepts(const std::string& key, bool chat) {
  // clang-format off
  static const std::set<std::string> shared = {
      "model", "max_tokens", "temperature", "top_p", "top_k", "seed", "n", "stop",
      "stop_token_ids", "ignore_eos", "logprobs", "stream", "stream_options", "return_token_ids",
      "user", "frequency_penalty", "presence_penalty"};
  static const std::set<std::string> completion = {"prompt", "echo", "best_of"};
  static const std::set<std::string> chat_only = {
      "messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice",
      "chat_template_kwargs", "add_generation_prompt"};
  // clang-format on
  return shared.count(key) > 0 || (chat ? chat_only : completion).count(key) > 0;
}

// Typed field readers: a wrong type is a 400 naming the field.
class Fields {
 public:
  explicit Fields(const Json& body) : body_(body) {}
  [[nodiscard]] bool has(const char* name) const {
    return body_.contains(name) && !body_[name].is_null();
  }
  double number(const char* name, double fallback) const {
    return read<double>(name, fallback, &Json::is_number, "a number");
  }
  int64_t integer(const char* name, int64_t fallback) const {
    return read<int64_t>(name, fallback, &Json::is_number_integer, "an integer");
  }
  bool boolean(const char* name, bool fallback) const {
    return read<bool>(name, fallback, &Json::is_boolean, "a boolean");
  }
  std::string string(const char* name, const std::string& fallback) const {
    return read<std::string>(name, fallback, &Json::is_string, "a string");
  }

 private:
  template <typename T>
  T read(const char* name, T fallback, bool (Json::*is)() const noexcept, const char* kind) const {
    if (!has(name)) return fallback;
    if (!(body_[name].*is)())
      throw ApiError(400, absl::StrCat("'", name, "' must be ", kind), name);
    return body_[name].template get<T>();
  }

  const Json& body_;
};

}  // namespace

Json error_body(const ApiError& e) {
  Json err = {{"message", e.message},
              {"type", e.type},
              {"param", e.param.empty() ? Json(nullptr) : Json(e.param)},
              {"code", e.code.empty() ? Json(nullptr) : Json(e.code)}};
  return {{"error", err}};
}

std::vector<int64_t> RequestReader::tokenize(const Json& body) const {
  if (tok_ == nullptr) {
    throw ApiError{400, "the model directory has no tokenizer (tokenizer.json or tokenizer.model)",
                   "prompt"};
  }
  if (body.contains("messages"))
    return parse(Json{{"messages", body["messages"]}}, true).prompts[0].ids;
  const Fields f(body);
  return encode(f.string("prompt", ""), f.boolean("add_special_tokens", true));
}

std::vector<int64_t> RequestReader::detokenize_ids(const Json& body) const {
  if (tok_ == nullptr) throw ApiError{400, "the model directory has no tokenizer", "tokens"};
  if (!body.contains("tokens") || !body["tokens"].is_array()) {
    throw ApiError{400, "'tokens' must be a list of token ids", "tokens"};
  }
  std::vector<int64_t> ids;
  for (const Json& v : body["tokens"]) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
        v.get<int64_t>() >= engine_.vocab_size()) {
      throw ApiError{400, absl::StrCat("token ", v.dump(), " is not in the vocabulary"), "tokens"};
    }
    ids.push_back(v.get<int64_t>());
  }
  return ids;
}

std::vector<int64_t> RequestReader::encode(const std::string& text, bool add_special) const {
  const std::vector<int32_t> ids = tok_->encode(text, add_special);
  return {ids.begin(), ids.end()};
}

std::string RequestReader::decode(const std::vector<int64_t>& ids) const {
  if (tok_ == nullptr) return "";
  const std::vector<int32_t> narrow(ids.begin(), ids.end());
  return tok_->decode(narrow, /*skip_special_tokens=*/false);
}

ParsedRequest RequestReader::parse(const Json& body, bool chat) const {
  if (!body.is_object()) throw ApiError{400, "the body must be a JSON object"};
  for (const auto& [key, value] : body.items()) {
    if (!accepts(key, chat)) throw ApiError{400, absl::StrCat("unknown field '", key, "'"), key};
  }
  const Fields f(body);
  ParsedRequest p;
  p.chat = chat;
  if (f.has("model") && f.string("model", "") != model_name_) {
    throw ApiError{404,
                   absl::StrCat("the model '", f.string("model", ""),
                                "' does not exist (this server serves '", model_name_, "')"),
                   "model", "invalid_request_error", "model_not_found"};
  }
  auto need_tokenizer = [&](const char* what) {
    if (tok_ == nullptr) {
      throw ApiError{400,
                     absl::StrCat(what,
                                  " needs a tokenizer, and the model directory has none "
                                  "(tokenizer.Json or tokenizer.model): send token ids"),
                     chat ? "messages" : "prompt"};
    }
  };
  if (chat) {
    if (!body.contains("messages") || !body["messages"].is_array() || body["messages"].empty()) {
      throw ApiError{400, "'messages' must be a non-empty list", "messages"};
    }
    for (const Json& m : body["messages"]) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
        throw ApiError{400, "each message needs a string 'role'", "messages"};
      }
    }
    need_tokenizer("a chat request");
    if (chat_template_.empty()) {
      throw ApiError{400,
                     "the model has no chat template (tokenizer_config.Json 'chat_template'); "
                     "start the server with --chat-template FILE",
                     "messages"};
    }
    Json extra = Json::object();
    if (f.has("chat_template_kwargs")) {
      if (!body["chat_template_kwargs"].is_object())
        throw ApiError{400, "'chat_template_kwargs' must be an object", "chat_template_kwargs"};
      extra = body["chat_template_kwargs"];
    }
    const Json tools = f.has("tools") ? body["tools"] : Json(nullptr);
    absl::StatusOr<std::string> rendered = render_chat_template(
        chat_template_, body["messages"], tools, f.boolean("add_generation_prompt", true),
        tok_->bos_token(), tok_->eos_token(), extra);
    if (!rendered.ok()) throw ApiError{400, std::string(rendered.status().message()), "messages"};
    // A rendered template carries its own special tokens.
    p.prompts.push_back({encode(*rendered, false), *rendered});
  } else {
    if (!f.has("prompt")) throw ApiError{400, "'prompt' is required", "prompt"};
    const Json& prompt = body["prompt"];
    auto ids_of = [&](const Json& list) {
      Prompt out;
      for (const Json& v : list) {
        if (!v.is_number_integer())
          throw ApiError{400, "a token-id prompt must hold integers", "prompt"};
        out.ids.push_back(v.get<int64_t>());
      }
      return out;
    };
    if (prompt.is_string()) {
      need_tokenizer("a text prompt");
      p.prompts.push_back({encode(prompt.get<std::string>(), true), prompt.get<std::string>()});
    } else if (prompt.is_array() && !prompt.empty() && prompt[0].is_string()) {
      need_tokenizer("a text prompt");
      for (const Json& s : prompt) {
        if (!s.is_string())
          throw ApiError{400, "a list of prompts must hold only strings", "prompt"};
        p.prompts.push_back({encode(s.get<std::string>(), true), s.get<std::string>()});
      }
    } else if (prompt.is_array() && !prompt.empty() && prompt[0].is_array()) {
      for (const Json& l : prompt) {
        if (!l.is_array())
          throw ApiError{400, "a list of token-id prompts must hold only lists", "prompt"};
        p.prompts.push_back(ids_of(l));
      }
    } else if (prompt.is_array()) {
      p.prompts.push_back(ids_of(prompt));
    } else {
      throw ApiError{400,
                     "'prompt' must be a string, a list of strings, a list of token ids or a list "
                     "of lists of ids",
                     "prompt"};
    }
    for (Prompt& pr : p.prompts) {
      if (pr.text.empty() && tok_ != nullptr) pr.text = decode(pr.ids);
    }
  }
  GenerationParams& g = p.params;
  const char* max_name =
      chat && f.has("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  const int64_t longest = [&] {
    size_t m = 0;
    for (const Prompt& pr : p.prompts) m = std::max(m, pr.ids.size());
    return static_cast<int64_t>(m);
  }();
  // Chat fills the context by default; completions follow OpenAI's 16.
  const int64_t fallback = chat ? std::max<int64_t>(1, engine_.max_model_len() - longest) : 16;
  g.max_tokens = f.integer(max_name, fallback);
  if (g.max_tokens < 1)
    throw ApiError{400, absl::StrCat("'", max_name, "' must be >= 1"), max_name};
  g.temperature = static_cast<float>(f.number("temperature", 1.0));
  g.top_p = static_cast<float>(f.number("top_p", 1.0));
  const int64_t top_k = f.integer("top_k", 0);
  if (top_k < -1) throw ApiError{400, "'top_k' must be -1 (off) or >= 0", "top_k"};
  g.top_k = top_k < 0 ? 0 : static_cast<int>(top_k);
  if (f.has("seed")) g.seed = static_cast<uint64_t>(f.integer("seed", 0));
  p.n = static_cast<int>(f.integer("n", 1));
  if (p.n < 1 || p.n > 128) throw ApiError{400, "'n' must be in [1, 128]", "n"};
  if (f.has("stop")) {
    const Json& stop = body["stop"];
    if (stop.is_string()) {
      g.stop.push_back(stop.get<std::string>());
    } else if (stop.is_array()) {
      for (const Json& s : stop) {
        if (!s.is_string())
          throw ApiError{400, "'stop' must be a string or a list of strings", "stop"};
        g.stop.push_back(s.get<std::string>());
      }
    } else {
      throw ApiError{400, "'stop' must be a string or a list of strings", "stop"};
    }
    if (g.stop.size() > 16) throw ApiError{400, "at most 16 stop strings", "stop"};
  }
  if (f.has("stop_token_ids")) {
    if (!body["stop_token_ids"].is_array())
      throw ApiError{400, "'stop_token_ids' must be a list of ids", "stop_token_ids"};
    for (const Json& v : body["stop_token_ids"]) {
      if (!v.is_number_integer())
        throw ApiError{400, "'stop_token_ids' must be a list of ids", "stop_token_ids"};
      g.stop_token_ids.push_back(v.get<int64_t>());
    }
  }
  g.ignore_eos = f.boolean("ignore_eos", false);
  if (chat) {
    if (f.boolean("logprobs", false)) p.logprobs = static_cast<int>(f.integer("top_logprobs", 0));
  } else if (f.has("logprobs")) {
    p.logprobs = static_cast<int>(f.integer("logprobs", 0));
    if (p.logprobs < 0) throw ApiError{400, "'logprobs' must be >= 0", "logprobs"};
  }
  g.logprobs = p.logprobs;
  p.echo = f.boolean("echo", false);
  p.stream = f.boolean("stream", false);
  if (f.has("stream_options")) {
    const Json& so = body["stream_options"];
    if (!so.is_object())
      throw ApiError{400, "'stream_options' must be an object", "stream_options"};
    if (so.contains("include_usage") && !so["include_usage"].is_null()) {
      if (!so["include_usage"].is_boolean())
        throw ApiError{400, "'stream_options.include_usage' must be a boolean", "stream_options"};
      p.include_usage = so["include_usage"].get<bool>();
    }
  }
  p.return_token_ids = f.boolean("return_token_ids", false);
  for (const char* neutral : {"frequency_penalty", "presence_penalty"}) {
    if (f.number(neutral, 0.0) != 0.0)
      throw ApiError{400, absl::StrCat("'", neutral, "' is not supported (only 0)"), neutral};
  }
  if (f.integer("best_of", 1) != 1)
    throw ApiError{400, "'best_of' is not supported (only 1)", "best_of"};
  for (const Prompt& pr : p.prompts) {
    if (std::optional<Engine::Invalid> bad = engine_.check(pr.ids, g)) {
      std::string param = bad->param == "max_tokens" ? std::string(max_name) : bad->param;
      if (chat && param == "prompt") param = "messages";
      throw ApiError{400, bad->message, param};
    }
  }
  return p;
}

}  // namespace weft::serve
