// The OpenAI-compatible HTTP front door of `weft serve` (docs/serving.md): cpp-httplib on rank
// 0, requests turned into engine submissions, answers as JSON or server-sent events.
//
//   GET  /health  /v1/models  /metrics (Prometheus text)
//   POST /v1/completions  /v1/chat/completions  /tokenize  /detokenize
//
// Errors are OpenAI-shaped {"error": {"message", "type", "param", "code"}}: 400 bad JSON or
// fields, 401 wrong key, 404 unknown model or route, 413 body too large, 429 queue full.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "runtime/serve/engine.h"
#include "runtime/serve/tokenizer.h"

namespace httplib {
class Server;
}

namespace weft::serve {

struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 8000;            // 0: any free port
  std::string api_key;        // empty: no key needed
  std::string model_name;     // the id /v1/models lists and requests must name
  std::string chat_template;  // overrides the tokenizer's (empty: the tokenizer's)
  size_t max_body_bytes = 16 << 20;
  int threads = 64;  // HTTP worker threads (a streaming request holds one)
};

class OpenAiServer {
 public:
  // `tokenizer` may be null (a model directory without one serves token-id prompts only).
  OpenAiServer(Engine& engine, const Tokenizer* tokenizer, ServerConfig config);
  ~OpenAiServer();

  // Binds the socket; returns the port (the chosen one for port 0). Errors name host and port.
  absl::StatusOr<int> bind();
  // Serves on a background thread until stop().
  void start();
  void stop();
  // Waits until every completion begun has its answer written (a stream: its last chunk), or
  // `limit` passes; false then. For a process that must leave at once: stop() also waits for
  // idle keep-alive connections, seconds.
  bool wait_answered(std::chrono::milliseconds limit);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::serve
