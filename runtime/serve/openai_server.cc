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
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/serve/openai_request.h"
#include "runtime/serve/serve_metrics.h"

namespace weft::serve {

namespace {

using json = Json;

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(error_body(e).dump(), "application/json");
}

// Runs `handle` on the parsed body; a body that is not JSON, or an ApiError it throws, becomes
// the OpenAI-shaped error response.
template <typename Handler>
void with_body(const httplib::Request& req, httplib::Response& res, Handler handle) {
  try {
    handle(Json::parse(req.body));
  } catch (const Json::exception& e) {
    send_error(res, {400, absl::StrCat("the body is not valid JSON: ", e.what())});
  } catch (const ApiError& e) {
    send_error(res, e);
  }
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

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
  std::string error;                 // finish_reason "error": the engine's message
  int64_t cached_prompt_tokens = 0;  // served from the prefix cache (as the engine reports)
};

// The answer to a request the engine could not finish (a rank died): HTTP 500, or in a stream
// an error event, as vLLM sends; the openai clients raise it as an APIError.
ApiError engine_failure(const std::string& message) {
  return {500, message, "", "server_error", "engine_failed"};
}

}  // namespace

class OpenAiServer::Impl {
 public:
  Impl(Engine& engine, const Tokenizer* tokenizer, ServerConfig config)
      : engine_(engine),
        tok_(tokenizer),
        config_(std::move(config)),
        reader_(engine, tokenizer, config_.model_name,
                !config_.chat_template.empty() || tokenizer == nullptr
                    ? config_.chat_template
                    : tokenizer->chat_template()) {
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
  bool wait_answered(std::chrono::milliseconds limit) {
    std::unique_lock<std::mutex> lock(answering_mu_);
    return answering_cv_.wait_for(lock, limit, [&] { return answering_ == 0; });
  }

 private:
  void routes();
  bool authorized(const httplib::Request& req, httplib::Response& res) const;
  void completions(const httplib::Request& req, httplib::Response& res, bool chat);
  std::string token_text(int64_t id) const;
  json usage(const std::vector<Choice>& choices, const ParsedRequest& p) const;
  json logprobs_json(const Choice& c, bool chat) const;
  json final_response(const ParsedRequest& p, const std::vector<Choice>& choices,
                      const std::string& id) const;

  Engine& engine_;
  const Tokenizer* tok_;
  ServerConfig config_;
  RequestReader reader_;
  httplib::Server server_;
  // A completion being answered holds a ticket (a stream's goes with its response, after the
  // last chunk); wait_answered() waits for none to be left.
  std::shared_ptr<void> answering() {
    std::lock_guard<std::mutex> lock(answering_mu_);
    ++answering_;
    return std::shared_ptr<void>(nullptr, [this](void*) {
      std::lock_guard<std::mutex> lock(answering_mu_);
      if (--answering_ == 0) answering_cv_.notify_all();
    });
  }

  std::thread thread_;
  std::atomic<int64_t> next_id_{1};
  std::mutex answering_mu_;
  std::condition_variable answering_cv_;
  int answering_ = 0;
};

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
    res.set_content(prometheus_metrics(engine_.stats()), "text/plain; version=0.0.4");
  });
  server_.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    completions(req, res, false);
  });
  server_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    completions(req, res, true);
  });
  server_.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res)) return;
    with_body(req, res, [&](const Json& body) {
      const std::vector<int64_t> ids = reader_.tokenize(body);
      res.set_content(
          json{{"tokens", ids}, {"count", ids.size()}, {"max_model_len", engine_.max_model_len()}}
              .dump(),
          "application/json");
    });
  });
  server_.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res)) return;
    with_body(req, res, [&](const Json& body) {
      res.set_content(json{{"prompt", reader_.decode(reader_.detokenize_ids(body))}}.dump(),
                      "application/json");
    });
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

json OpenAiServer::Impl::usage(const std::vector<Choice>& choices, const ParsedRequest& p) const {
  int64_t prompt = 0, completion = 0;
  for (const Prompt& pr : p.prompts) prompt += static_cast<int64_t>(pr.ids.size());
  std::map<int, int64_t> cached_of;  // per prompt: its choices share it
  for (const Choice& c : choices) {
    completion += static_cast<int64_t>(c.tokens.size());
    cached_of[c.prompt] = std::max(cached_of[c.prompt], c.cached_prompt_tokens);
  }
  int64_t cached = 0;
  for (const auto& [prompt_index, n] : cached_of) cached += n;
  // OpenAI's prompt_tokens_details.cached_tokens: prompt tokens whose keys and values were
  // reused (a prefix-cache hit, or a disaggregated prefill's transfer).
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

json OpenAiServer::Impl::final_response(const ParsedRequest& p, const std::vector<Choice>& choices,
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
  std::shared_ptr<void> ticket = answering();
  std::optional<ParsedRequest> parsed;
  with_body(req, res, [&](const Json& body) { parsed = reader_.parse(body, chat); });
  if (!parsed) return;  // the error is answered
  const ParsedRequest& p = *parsed;
  auto ex = std::make_shared<Exchange>();
  auto choices = std::make_shared<std::vector<Choice>>();
  for (size_t pi = 0; pi < p.prompts.size(); ++pi) {
    for (int j = 0; j < p.n; ++j) {
      Choice c;
      c.prompt = static_cast<int>(pi);
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
    if (u.finished) {
      c.finish_reason = u.finish_reason;
      c.error = u.error;
      c.cached_prompt_tokens = u.cached_prompt_tokens;
    }
  };
  if (!p.stream) {
    std::unique_lock<std::mutex> lock(ex->mu);
    ex->cv.wait(lock, [&] { return ex->open == 0; });
    for (const auto& [index, u] : ex->updates) apply(index, u);
    for (const Choice& c : *choices) {
      if (c.finish_reason == "error") return send_error(res, engine_failure(c.error));
    }
    res.set_content(final_response(p, *choices, id).dump(), "application/json");
    return;
  }
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider("text/event-stream", [this, p, ex, choices, id, created, apply,
                                                         ticket](size_t, httplib::DataSink& sink) {
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
    bool failed = false;  // an error event ends the stream
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
        if (u.finish_reason == "error") {
          send(error_body(engine_failure(u.error)));
          abandon();  // the other choices
          failed = true;
          break;
        }
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
      if (finished_all || failed) break;
    }
    if (p.include_usage && !failed) {
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

OpenAiServer::OpenAiServer(Engine& engine, const Tokenizer* tokenizer, ServerConfig config)
    : impl_(std::make_unique<Impl>(engine, tokenizer, std::move(config))) {}
OpenAiServer::~OpenAiServer() { impl_->stop(); }
absl::StatusOr<int> OpenAiServer::bind() { return impl_->bind(); }
void OpenAiServer::start() { impl_->start(); }
void OpenAiServer::stop() { impl_->stop(); }
bool OpenAiServer::wait_answered(std::chrono::milliseconds limit) {
  return impl_->wait_answered(limit);
}

}  // namespace weft::serve
