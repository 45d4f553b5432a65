#include "runtime/serve/openai_server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "runtime/serve/jinja.h"

namespace weft::serve {

namespace {

// Ordered: request bodies keep the client's key order (tool schemas reach the chat template as
// sent), and responses list their fields in the order written here.
using json = nlohmann::ordered_json;

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

json error_body(const ApiError& e) {
  json err = {{"message", e.message},
              {"type", e.type},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  return {{"error", err}};
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(error_body(e).dump(), "application/json");
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The fields each endpoint accepts; anything else is a 400 naming it. Some are accepted only at
// their neutral value (penalties 0, best_of 1) since the engine does not implement them.
const std::set<std::string>& completion_fields() {
  static const std::set<std::string> f = {"model",
                                          "prompt",
                                          "max_tokens",
                                          "temperature",
                                          "top_p",
                                          "top_k",
                                          "seed",
                                          "n",
                                          "stop",
                                          "stop_token_ids",
                                          "ignore_eos",
                                          "logprobs",
                                          "echo",
                                          "stream",
                                          "stream_options",
                                          "return_token_ids",
                                          "user",
                                          "frequency_penalty",
                                          "presence_penalty",
                                          "best_of"};
  return f;
}
const std::set<std::string>& chat_fields() {
  static const std::set<std::string> f = {"model",
                                          "messages",
                                          "max_tokens",
                                          "max_completion_tokens",
                                          "temperature",
                                          "top_p",
                                          "top_k",
                                          "seed",
                                          "n",
                                          "stop",
                                          "stop_token_ids",
                                          "ignore_eos",
                                          "logprobs",
                                          "top_logprobs",
                                          "stream",
                                          "stream_options",
                                          "return_token_ids",
                                          "user",
                                          "frequency_penalty",
                                          "presence_penalty",
                                          "tools",
                                          "tool_choice",
                                          "chat_template_kwargs",
                                          "add_generation_prompt"};
  return f;
}

// Typed field readers: a wrong type is a 400 naming the field.
class Fields {
 public:
  explicit Fields(const json& body) : body_(body) {}
  [[nodiscard]] bool has(const char* name) const {
    return body_.contains(name) && !body_[name].is_null();
  }
  double number(const char* name, double fallback) const {
    if (!has(name)) return fallback;
    if (!body_[name].is_number())
      throw ApiError{400, absl::StrCat("'", name, "' must be a number"), name};
    return body_[name].get<double>();
  }
  int64_t integer(const char* name, int64_t fallback) const {
    if (!has(name)) return fallback;
    if (!body_[name].is_number_integer()) {
      throw ApiError{400, absl::StrCat("'", name, "' must be an integer"), name};
    }
    return body_[name].get<int64_t>();
  }
  bool boolean(const char* name, bool fallback) const {
    if (!has(name)) return fallback;
    if (!body_[name].is_boolean())
      throw ApiError{400, absl::StrCat("'", name, "' must be a boolean"), name};
    return body_[name].get<bool>();
  }
  std::string string(const char* name, const std::string& fallback) const {
    if (!has(name)) return fallback;
    if (!body_[name].is_string())
      throw ApiError{400, absl::StrCat("'", name, "' must be a string"), name};
    return body_[name].get<std::string>();
  }

 private:
  const json& body_;
};

// One HTTP request's engine requests (choices) and their updates, shared by the engine thread
// (producer) and the HTTP thread (consumer).
struct Exchange {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<int, RequestUpdate>> updates;  // (choice, update)
  int open = 0;                                       // choices not finished
  std::vector<int64_t> ids;                           // engine request per choice
};

// One choice's accumulated answer.
struct Choice {
  int prompt = 0;  // which prompt of the request
  std::string text;
  std::vector<GeneratedToken> tokens;
  std::string finish_reason;
  int64_t prompt_tokens = 0;
  bool sent_role = false;  // chat streaming: the first delta carries the role
};

struct Prompt {
  std::vector<int64_t> ids;
  std::string text;  // for echo (empty for id prompts without a tokenizer)
};

struct Parsed {
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

}  // namespace

class OpenAiServer::Impl {
 public:
  Impl(Engine& engine, const Tokenizer* tokenizer, ServerConfig config)
      : engine_(engine), tok_(tokenizer), config_(std::move(config)) {
    if (config_.chat_template.empty() && tok_ != nullptr) {
      config_.chat_template = tok_->chat_template();
    }
    const int threads = config_.threads;
    server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server_.set_payload_max_length(config_.max_body_bytes);
    routes();
  }

  absl::StatusOr<int> bind() {
    int port = config_.port;
    if (port == 0) {
      port = server_.bind_to_any_port(config_.host);
    } else if (!server_.bind_to_port(config_.host, port)) {
      port = -1;
    }
    if (port < 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", config_.host, ":",
                                                 config_.port,
                                                 " (in use, or not an address here)"));
    }
    return port;
  }
  void start() {
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  void stop() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void routes();
  bool authorized(const httplib::Request& req, httplib::Response& res) const;
  void completions(const httplib::Request& req, httplib::Response& res, bool chat);
  Parsed parse(const json& body, bool chat) const;
  std::vector<int64_t> encode(const std::string& text, bool add_special) const;
  std::string decode(const std::vector<int64_t>& ids) const;
  std::string token_text(int64_t id) const;
  std::string metrics() const;
  json usage(const std::vector<Choice>& choices, const Parsed& p) const;
  json logprobs_json(const Choice& c, bool chat) const;
  json final_response(const Parsed& p, const std::vector<Choice>& choices,
                      const std::string& id) const;

  Engine& engine_;
  const Tokenizer* tok_;
  ServerConfig config_;
  httplib::Server server_;
  std::thread thread_;
  std::atomic<int64_t> next_id_{1};
};

std::vector<int64_t> OpenAiServer::Impl::encode(const std::string& text, bool add_special) const {
  const std::vector<int32_t> ids = tok_->encode(text, add_special);
  return {ids.begin(), ids.end()};
}

std::string OpenAiServer::Impl::decode(const std::vector<int64_t>& ids) const {
  if (tok_ == nullptr) return "";
  const std::vector<int32_t> narrow(ids.begin(), ids.end());
  return tok_->decode(narrow, /*skip_special_tokens=*/false);
}

std::string OpenAiServer::Impl::token_text(int64_t id) const {
  if (tok_ == nullptr) return absl::StrCat("token_id:", id);
  const int32_t one = static_cast<int32_t>(id);
  return tok_->decode(std::span<const int32_t>(&one, 1), false);
}

bool OpenAiServer::Impl::authorized(const httplib::Request& req, httplib::Response& res) const {
  if (config_.api_key.empty()) return true;
  if (req.get_header_value("Authorization") == "Bearer " + config_.api_key) return true;
  send_error(res, {401, "missing or wrong API key: send 'Authorization: Bearer KEY'", "",
                   "authentication_error", "invalid_api_key"});
  return false;
}

void OpenAiServer::Impl::routes() {
  server_.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("{}", "application/json");
  });
  server_.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res)) return;
    json model = {{"id", config_.model_name},
                  {"object", "model"},
                  {"created", unix_now()},
                  {"owned_by", "weft"},
                  {"max_model_len", engine_.max_model_len()}};
    res.set_content(json{{"object", "list"}, {"data", json::array({model})}}.dump(),
                    "application/json");
  });
  server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics(), "text/plain; version=0.0.4");
  });
  server_.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    completions(req, res, false);
  });
  server_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    completions(req, res, true);
  });
  server_.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res)) return;
    try {
      const json body = json::parse(req.body);
      if (tok_ == nullptr)
        throw ApiError{400,
                       "the model directory has no tokenizer (tokenizer.json or tokenizer.model)",
                       "prompt"};
      const Fields f(body);
      std::vector<int64_t> ids;
      if (body.contains("messages")) {
        Parsed p = parse(json{{"messages", body["messages"]}}, true);
        ids = p.prompts[0].ids;
      } else {
        ids = encode(f.string("prompt", ""), f.boolean("add_special_tokens", true));
      }
      res.set_content(
          json{{"tokens", ids}, {"count", ids.size()}, {"max_model_len", engine_.max_model_len()}}
              .dump(),
          "application/json");
    } catch (const json::exception& e) {
      send_error(res, {400, absl::StrCat("the body is not valid JSON: ", e.what())});
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  });
  server_.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res)) return;
    try {
      const json body = json::parse(req.body);
      if (tok_ == nullptr) throw ApiError{400, "the model directory has no tokenizer", "tokens"};
      if (!body.contains("tokens") || !body["tokens"].is_array()) {
        throw ApiError{400, "'tokens' must be a list of token ids", "tokens"};
      }
      std::vector<int64_t> ids;
      for (const json& v : body["tokens"]) {
        if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
            v.get<int64_t>() >= engine_.vocab_size()) {
          throw ApiError{400, absl::StrCat("token ", v.dump(), " is not in the vocabulary"),
                         "tokens"};
        }
        ids.push_back(v.get<int64_t>());
      }
      res.set_content(json{{"prompt", decode(ids)}}.dump(), "application/json");
    } catch (const json::exception& e) {
      send_error(res, {400, absl::StrCat("the body is not valid JSON: ", e.what())});
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  });
  server_.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;  // a handler already wrote an error body
    if (res.status == 404) {
      send_error(res, {404, absl::StrCat("no route ", req.method, " ", req.path), "",
                       "invalid_request_error", "not_found"});
    } else if (res.status == 413) {
      send_error(res, {413, "the request body is too large", "", "invalid_request_error",
                       "payload_too_large"});
    } else {
      send_error(res, {res.status, absl::StrCat("HTTP ", res.status)});
    }
  });
}

Parsed OpenAiServer::Impl::parse(const json& body, bool chat) const {
  if (!body.is_object()) throw ApiError{400, "the body must be a JSON object"};
  const std::set<std::string>& known = chat ? chat_fields() : completion_fields();
  for (const auto& [key, value] : body.items()) {
    if (!known.count(key)) throw ApiError{400, absl::StrCat("unknown field '", key, "'"), key};
  }
  const Fields f(body);
  Parsed p;
  p.chat = chat;
  if (f.has("model") && f.string("model", "") != config_.model_name) {
    throw ApiError{404,
                   absl::StrCat("the model '", f.string("model", ""),
                                "' does not exist (this server serves '", config_.model_name, "')"),
                   "model", "invalid_request_error", "model_not_found"};
  }
  auto need_tokenizer = [&](const char* what) {
    if (tok_ == nullptr) {
      throw ApiError{400,
                     absl::StrCat(what,
                                  " needs a tokenizer, and the model directory has none "
                                  "(tokenizer.json or tokenizer.model): send token ids"),
                     chat ? "messages" : "prompt"};
    }
  };
  if (chat) {
    if (!body.contains("messages") || !body["messages"].is_array() || body["messages"].empty()) {
      throw ApiError{400, "'messages' must be a non-empty list", "messages"};
    }
    for (const json& m : body["messages"]) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
        throw ApiError{400, "each message needs a string 'role'", "messages"};
      }
    }
    need_tokenizer("a chat request");
    if (config_.chat_template.empty()) {
      throw ApiError{400,
                     "the model has no chat template (tokenizer_config.json 'chat_template'); "
                     "start the server with --chat-template FILE",
                     "messages"};
    }
    json extra = json::object();
    if (f.has("chat_template_kwargs")) {
      if (!body["chat_template_kwargs"].is_object())
        throw ApiError{400, "'chat_template_kwargs' must be an object", "chat_template_kwargs"};
      extra = body["chat_template_kwargs"];
    }
    const json tools = f.has("tools") ? body["tools"] : json(nullptr);
    absl::StatusOr<std::string> rendered = render_chat_template(
        config_.chat_template, body["messages"], tools, f.boolean("add_generation_prompt", true),
        tok_->bos_token(), tok_->eos_token(), extra);
    if (!rendered.ok()) throw ApiError{400, std::string(rendered.status().message()), "messages"};
    // A rendered template carries its own special tokens.
    p.prompts.push_back({encode(*rendered, false), *rendered});
  } else {
    if (!f.has("prompt")) throw ApiError{400, "'prompt' is required", "prompt"};
    const json& prompt = body["prompt"];
    auto ids_of = [&](const json& list) {
      Prompt out;
      for (const json& v : list) {
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
      for (const json& s : prompt) {
        if (!s.is_string())
          throw ApiError{400, "a list of prompts must hold only strings", "prompt"};
        p.prompts.push_back({encode(s.get<std::string>(), true), s.get<std::string>()});
      }
    } else if (prompt.is_array() && !prompt.empty() && prompt[0].is_array()) {
      for (const json& l : prompt) {
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
    const json& stop = body["stop"];
    if (stop.is_string()) {
      g.stop.push_back(stop.get<std::string>());
    } else if (stop.is_array()) {
      for (const json& s : stop) {
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
    for (const json& v : body["stop_token_ids"]) {
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
    const json& so = body["stream_options"];
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

json OpenAiServer::Impl::logprobs_json(const Choice& c, bool chat) const {
  if (chat) {
    json content = json::array();
    for (const GeneratedToken& t : c.tokens) {
      const std::string s = token_text(t.id);
      json top = json::array();
      for (const auto& [id, lp] : t.top) {
        const std::string ts = token_text(id);
        top.push_back({{"token", ts},
                       {"logprob", lp},
                       {"bytes", std::vector<uint8_t>(ts.begin(), ts.end())}});
      }
      content.push_back({{"token", s},
                         {"logprob", t.logprob},
                         {"bytes", std::vector<uint8_t>(s.begin(), s.end())},
                         {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  size_t offset = 0;
  for (const GeneratedToken& t : c.tokens) {
    const std::string s = token_text(t.id);
    tokens.push_back(s);
    lps.push_back(t.logprob);
    json top = json::object();
    for (const auto& [id, lp] : t.top) top[token_text(id)] = lp;
    tops.push_back(top);
    offsets.push_back(offset);
    offset += s.size();
  }
  return {{"tokens", tokens},
          {"token_logprobs", lps},
          {"top_logprobs", tops},
          {"text_offset", offsets}};
}

json OpenAiServer::Impl::usage(const std::vector<Choice>& choices, const Parsed& p) const {
  int64_t prompt = 0, completion = 0;
  for (const Prompt& pr : p.prompts) prompt += static_cast<int64_t>(pr.ids.size());
  for (const Choice& c : choices) completion += static_cast<int64_t>(c.tokens.size());
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion}};
}

json OpenAiServer::Impl::final_response(const Parsed& p, const std::vector<Choice>& choices,
                                        const std::string& id) const {
  json out_choices = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const Choice& c = choices[i];
    json choice = {{"index", i}, {"finish_reason", c.finish_reason}};
    if (p.chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    } else {
      choice["text"] = p.echo ? p.prompts[c.prompt].text + c.text : c.text;
    }
    choice["logprobs"] = p.logprobs >= 0 ? logprobs_json(c, p.chat) : json(nullptr);
    if (p.return_token_ids) {
      std::vector<int64_t> ids;
      for (const GeneratedToken& t : c.tokens) ids.push_back(t.id);
      choice["token_ids"] = ids;
      choice["prompt_token_ids"] = p.prompts[c.prompt].ids;
    }
    out_choices.push_back(choice);
  }
  json out = {{"id", id},
              {"object", p.chat ? "chat.completion" : "text_completion"},
              {"created", unix_now()},
              {"model", config_.model_name},
              {"choices", out_choices},
              {"usage", usage(choices, p)}};
  if (p.return_token_ids && p.prompts.size() == 1) out["prompt_token_ids"] = p.prompts[0].ids;
  return out;
}

void OpenAiServer::Impl::completions(const httplib::Request& req, httplib::Response& res,
                                     bool chat) {
  if (!authorized(req, res)) return;
  Parsed p;
  try {
    p = parse(json::parse(req.body), chat);
  } catch (const json::exception& e) {
    return send_error(res, {400, absl::StrCat("the body is not valid JSON: ", e.what())});
  } catch (const ApiError& e) {
    return send_error(res, e);
  }
  auto ex = std::make_shared<Exchange>();
  auto choices = std::make_shared<std::vector<Choice>>();
  for (size_t pi = 0; pi < p.prompts.size(); ++pi) {
    for (int j = 0; j < p.n; ++j) {
      Choice c;
      c.prompt = static_cast<int>(pi);
      c.prompt_tokens = static_cast<int64_t>(p.prompts[pi].ids.size());
      choices->push_back(std::move(c));
    }
  }
  {
    std::lock_guard<std::mutex> lock(ex->mu);
    ex->open = static_cast<int>(choices->size());
  }
  for (size_t i = 0; i < choices->size(); ++i) {
    GenerationParams g = p.params;
    // n choices of one seeded request: distinct, each reproducible.
    if (g.seed.has_value()) g.seed = *g.seed + static_cast<uint64_t>(i % p.n);
    const int index = static_cast<int>(i);
    absl::StatusOr<int64_t> id =
        engine_.submit(p.prompts[(*choices)[i].prompt].ids, g, [ex, index](const RequestUpdate& u) {
          std::lock_guard<std::mutex> lock(ex->mu);
          ex->updates.emplace_back(index, u);
          if (u.finished) --ex->open;
          ex->cv.notify_all();
        });
    if (!id.ok()) {
      for (int64_t submitted : ex->ids) engine_.cancel(submitted);
      const bool full = absl::IsResourceExhausted(id.status());
      return send_error(res, {full ? 429 : 503, std::string(id.status().message()), "",
                              full ? "rate_limit_error" : "server_error"});
    }
    ex->ids.push_back(*id);
  }
  const std::string id = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", unix_now(), "-", next_id_++);
  const int64_t created = unix_now();
  auto apply = [choices](int index, const RequestUpdate& u) {
    Choice& c = (*choices)[index];
    c.text += u.text;
    c.tokens.insert(c.tokens.end(), u.tokens.begin(), u.tokens.end());
    if (u.finished) c.finish_reason = u.finish_reason;
  };
  if (!p.stream) {
    std::unique_lock<std::mutex> lock(ex->mu);
    ex->cv.wait(lock, [&] { return ex->open == 0; });
    for (const auto& [index, u] : ex->updates) apply(index, u);
    res.set_content(final_response(p, *choices, id).dump(), "application/json");
    return;
  }
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider("text/event-stream", [this, p, ex, choices, id, created, apply](
                                                            size_t, httplib::DataSink& sink) {
    auto send = [&](const json& chunk) {
      const std::string line = "data: " + chunk.dump() + "\n\n";
      return sink.write(line.data(), line.size());
    };
    auto chunk_of = [&](json choice_list) {
      return json{{"id", id},
                  {"object", p.chat ? "chat.completion.chunk" : "text_completion"},
                  {"created", created},
                  {"model", config_.model_name},
                  {"choices", std::move(choice_list)}};
    };
    auto abandon = [&] {
      for (int64_t rid : ex->ids) engine_.cancel(rid);
      return false;
    };
    // Chat streams open each choice with the assistant role; echo opens with the prompt.
    for (size_t i = 0; i < choices->size(); ++i) {
      json delta;
      if (p.chat) {
        delta = {{"index", i},
                 {"delta", {{"role", "assistant"}, {"content", ""}}},
                 {"logprobs", nullptr},
                 {"finish_reason", nullptr}};
      } else if (p.echo) {
        delta = {{"index", i},
                 {"text", p.prompts[(*choices)[i].prompt].text},
                 {"logprobs", nullptr},
                 {"finish_reason", nullptr}};
      } else {
        continue;
      }
      if (!send(chunk_of(json::array({delta})))) return abandon();
    }
    while (true) {
      std::deque<std::pair<int, RequestUpdate>> batch;
      bool finished_all = false;
      {
        std::unique_lock<std::mutex> lock(ex->mu);
        ex->cv.wait_for(lock, std::chrono::milliseconds(500),
                        [&] { return !ex->updates.empty() || ex->open == 0; });
        batch.swap(ex->updates);
        finished_all = ex->open == 0;
      }
      if (!sink.is_writable()) return abandon();
      for (const auto& [index, u] : batch) {
        apply(index, u);
        if (u.text.empty() && !u.finished && p.logprobs < 0 && !p.return_token_ids) continue;
        json choice = {{"index", index}};
        if (p.chat) {
          choice["delta"] =
              u.text.empty() && u.finished ? json::object() : json{{"content", u.text}};
        } else {
          choice["text"] = u.text;
        }
        Choice partial;
        partial.tokens = u.tokens;
        choice["logprobs"] = p.logprobs >= 0 ? logprobs_json(partial, p.chat) : json(nullptr);
        choice["finish_reason"] = u.finished ? json(u.finish_reason) : json(nullptr);
        if (p.return_token_ids) {
          std::vector<int64_t> ids;
          for (const GeneratedToken& t : u.tokens) ids.push_back(t.id);
          choice["token_ids"] = ids;
        }
        if (!send(chunk_of(json::array({choice})))) return abandon();
      }
      if (finished_all) break;
    }
    if (p.include_usage) {
      json last = chunk_of(json::array());
      last["usage"] = usage(*choices, p);
      if (!send(last)) return abandon();
    }
    const std::string done = "data: [DONE]\n\n";
    sink.write(done.data(), done.size());
    sink.done();
    return true;
  });
}

std::string OpenAiServer::Impl::metrics() const {
  const EngineStats s = engine_.stats();
  std::string out;
  auto gauge = [&](const char* name, const char* help, double v, const char* type = "gauge") {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name, " ",
                    absl::StrFormat("%.17g", v), "\n");
  };
  gauge("weft_requests_running", "Requests in the running batch.", s.running);
  gauge("weft_requests_waiting", "Requests waiting to be scheduled.", s.waiting);
  gauge("weft_kv_blocks_used", "KV cache blocks referenced by requests or cached.",
        s.kv_blocks_used);
  gauge("weft_kv_blocks_free", "KV cache blocks free to allocate.",
        s.kv_blocks_total - s.kv_blocks_used);
  gauge("weft_prefix_cache_hit_rate",
        "Full prompt blocks served from the prefix cache over those looked up.", s.prefix_hit_rate);
  gauge("weft_prompt_tokens_total", "Prompt tokens computed (prefix-cache hits excluded).",
        static_cast<double>(s.prompt_tokens), "counter");
  gauge("weft_generation_tokens_total", "Tokens generated.",
        static_cast<double>(s.generated_tokens), "counter");
  gauge("weft_requests_finished_total", "Requests finished (any reason).",
        static_cast<double>(s.requests_finished), "counter");
  gauge("weft_requests_rejected_total", "Requests refused with 429 (queue full).",
        static_cast<double>(s.requests_rejected), "counter");
  gauge("weft_requests_aborted_total", "Requests aborted: the client went away, or shutdown.",
        static_cast<double>(s.requests_aborted), "counter");
  gauge("weft_preemptions_total", "Requests preempted (recomputed) for lack of KV blocks.",
        static_cast<double>(s.preemptions), "counter");
  gauge("weft_engine_steps_total", "Engine steps run.", static_cast<double>(s.steps), "counter");
  auto histogram = [&](const char* name, const char* help, const std::vector<double>& values,
                       std::initializer_list<double> bounds) {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " histogram\n");
    double sum = 0;
    for (double v : values) sum += v;
    for (double b : bounds) {
      const auto count =
          std::count_if(values.begin(), values.end(), [&](double v) { return v <= b; });
      absl::StrAppend(&out, name, "_bucket{le=\"", absl::StrFormat("%g", b), "\"} ", count, "\n");
    }
    absl::StrAppend(&out, name, "_bucket{le=\"+Inf\"} ", values.size(), "\n", name, "_sum ",
                    absl::StrFormat("%.9g", sum), "\n", name, "_count ", values.size(), "\n");
  };
  histogram("weft_time_to_first_token_seconds", "Time from arrival to the first token.",
            s.ttft_seconds, {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30});
  histogram("weft_time_per_output_token_seconds", "Mean time per token after the first.",
            s.tpot_seconds, {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1});
  return out;
}

OpenAiServer::OpenAiServer(Engine& engine, const Tokenizer* tokenizer, ServerConfig config)
    : impl_(std::make_unique<Impl>(engine, tokenizer, std::move(config))) {}
OpenAiServer::~OpenAiServer() { impl_->stop(); }
absl::StatusOr<int> OpenAiServer::bind() { return impl_->bind(); }
void OpenAiServer::start() { impl_->start(); }
void OpenAiServer::stop() { impl_->stop(); }

}  // namespace weft::serve
