// weft serve --model DIR [--host 127.0.0.1] [--port 8000] [--tp N] [--pp N] ... (docs/serving.md)
// Rank 0 owns HTTP, the scheduler and the samplers; every rank holds its shard of the model and
// of the KV cache and runs each step. SIGINT/SIGTERM: stop accepting, abort what is in flight,
// every rank exits 0.
#include <atomic>
#include <csignal>
#include <cstdio>

#include "launch/commands.h"
#include "launch/engine_setup.h"
#include "runtime/core/status.h"
#include "runtime/io/file_util.h"
#include "runtime/serve/openai_server.h"

namespace weft::cli {
namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_stop_signal(int) { g_stop.store(true); }

}  // namespace

absl::Status run_serve(Session& session, const Args& args) {
  std::vector<FlagSpec> specs = {
      {"model", FlagKind::kString,
       "Hugging Face model directory (config.json, safetensors, tokenizer)", true},
      {"host", FlagKind::kString, "address to bind (default 127.0.0.1, loopback only)"},
      {"port", FlagKind::kInt, "port (default 8000; 0: any free port)", false, 0},
      {"max-queue", FlagKind::kInt,
       "requests waiting beyond the running ones before 429 (default 256)", false, 0},
      {"api-key", FlagKind::kString, "require 'Authorization: Bearer KEY'"},
      {"served-model-name", FlagKind::kString, "the model id clients name (default: --model)"},
      {"chat-template", FlagKind::kString,
       "a Jinja chat template file (default: the tokenizer's)"}};
  for (const FlagSpec& s : engine_flags()) specs.push_back(s);
  WEFT_ASSIGN_OR_RETURN(
      Flags flags, parse_flags(session, "serve", "serve a model over an OpenAI-compatible HTTP API",
                               args, specs));
  if (flags.integer("port", 8000) > 65535) {
    return session.agree(
        invalid_argument("--port ", flags.integer("port", 8000), " must be in [0, 65535]"));
  }
  serve::ServerConfig server_config;
  server_config.host = flags.str("host", "127.0.0.1");
  server_config.port = static_cast<int>(flags.integer("port", 8000));
  server_config.api_key = flags.str("api-key");
  server_config.model_name = flags.str("served-model-name", flags.str("model"));
  absl::Status template_status;
  if (flags.has("chat-template") && session.is_root()) {
    absl::StatusOr<std::string> text = io::read_file(flags.str("chat-template"));
    if (text.ok()) {
      server_config.chat_template = *text;
    } else {
      template_status = text.status();
    }
  }
  WEFT_RETURN_IF_ERROR(session.agree(template_status));
  const int64_t max_queue = flags.integer("max-queue", 256);
  WEFT_ASSIGN_OR_RETURN(EngineSetup setup, setup_engine(session, flags, max_queue));
  // Signals end the loop on rank 0; the other ranks leave when rank 0 releases them.
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  if (!session.is_root()) {
    WEFT_RETURN_IF_ERROR(session.agree(absl::OkStatus()));
    const serve::Disaggregation* disagg = setup.engine->disaggregation();
    if (disagg != nullptr && disagg->is_leader()) {
      setup.engine->run_decode();  // a decode instance's leader, until rank 0 stops it
    } else {
      setup.engine->run_worker();
    }
    return absl::OkStatus();
  }
  server_config.threads =
      static_cast<int>(std::min<int64_t>(1024, flags.integer("max-num-seqs", 64) + max_queue + 8));
  serve::OpenAiServer server(*setup.engine, setup.tokenizer.get(), server_config);
  absl::StatusOr<int> port = server.bind();
  WEFT_RETURN_IF_ERROR(session.agree(port.status()));
  server.start();
  std::printf("weft: listening on http://%s:%d\n", server_config.host.c_str(), *port);
  std::fflush(stdout);
  setup.engine->run(g_stop);
  server.stop();
  std::fprintf(stderr, "weft: server stopped\n");
  return absl::OkStatus();
}

}  // namespace weft::cli
