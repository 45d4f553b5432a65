// weft serve --model DIR [--host 127.0.0.1] [--port 8000] [--tp N] [--pp N] ... (docs/serving.md)
// Rank 0 owns HTTP, the scheduler and the samplers; every rank holds its shard of the model and
// of the KV cache and runs each step. SIGINT/SIGTERM: stop accepting, abort what is in flight,
// every rank exits 0 — unless a rank has died (docs/serving.md "Disaggregated prefill and
// decode", docs/operations.md "Failure detection"): then every request fails with an error
// naming the rank and rank 0 exits 76. Under `mpirun --enable-recovery` a disaggregated server
// that loses a rank of a decode instance, with another decode instance left, fails that
// instance's requests only and goes on serving.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "comm/health_monitor.h"
#include "launch/commands.h"
#include "launch/engine_setup.h"
#include "runtime/core/status.h"
#include "runtime/io/file_util.h"
#include "runtime/serve/openai_server.h"

namespace weft::cli {
namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_stop_signal(int) { g_stop.store(true); }

// Rank 0: the health monitor's verdict on a dead or hung rank, set on the monitor's thread.
std::mutex g_verdict_mu;
std::string g_verdict;

// How long rank 0 waits, after a stop signal, for every rank to answer a heartbeat. mpirun sends
// SIGTERM to the survivors when a rank dies and SIGKILL one second later
// (odls_base_sigkill_timeout): the clients must have their errors by then.
constexpr double kProbeSeconds = 0.3;

// "rank 1 (decode instance 0)": a rank and its role.
std::string rank_name(int rank, const serve::Disaggregation* disagg) {
  if (disagg == nullptr) return absl::StrCat("rank ", rank);
  const serve::DisaggLayout& l = disagg->layout();
  const int instance = l.instance_of(rank);
  return l.is_prefill(instance) ? absl::StrCat("rank ", rank, " (prefill instance ", instance, ")")
                                : absl::StrCat("rank ", rank, " (decode instance ",
                                               instance - l.prefill_instances(), ")");
}

// Rank 0, once serving has stopped: why no other rank can be reached, or "" (a plain stop).
// `monitor_verdict` is the health monitor's own (a rank silent for --comm-timeout, or hung).
std::string peer_failure(comm::HealthMonitor* health, const std::string& monitor_verdict,
                         const serve::Disaggregation* disagg) {
  if (!monitor_verdict.empty() || health == nullptr) return monitor_verdict;
  const std::vector<int> silent = health->unresponsive_ranks(kProbeSeconds);
  if (silent.empty()) return "";
  std::vector<std::string> names;
  for (int r : silent) names.push_back(rank_name(r, disagg));
  return absl::StrCat(absl::StrJoin(names, ", "), " sent no heartbeat within ", kProbeSeconds,
                      " s of the stop signal: it died or is stopped");
}

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
      setup.engine->run_leader();  // another instance's leader, until rank 0 stops it
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
  // The monitor's verdict on a dead or hung rank stops serving; the main thread answers the
  // clients and ends the process while the monitor's thread waits (if it cannot, the monitor
  // ends the job as it would have).
  comm::HealthMonitor* health = session.health();
  if (health != nullptr) {
    health->set_failure_hook([](const std::string& message) {
      {
        std::lock_guard<std::mutex> lock(g_verdict_mu);
        g_verdict = message;
      }
      g_stop.store(true);
      std::this_thread::sleep_for(std::chrono::seconds(5));
    });
  }
  // A dead rank of a decode instance, with another decode instance left: its requests fail and
  // serving goes on (only where the launcher lets the job outlive a rank: mpirun
  // --enable-recovery; otherwise mpirun's SIGTERM comes first).
  serve::Engine& engine = *setup.engine;
  const serve::Disaggregation* disagg = engine.disaggregation();
  if (health != nullptr && disagg != nullptr) {
    health->set_loss_handler([&engine, disagg](int rank, const std::string& message) {
      const serve::DisaggLayout& l = disagg->layout();
      const int g = l.instance_of(rank);
      std::vector<int> ranks;
      if (l.is_prefill(g) ||
          !engine.lose_decode_instance(
              g, absl::StrCat("weft serve: ", rank_name(rank, disagg), " is lost (", message,
                              "); the requests on its decode instance fail, the server goes "
                              "on with the others"))) {
        return ranks;
      }
      for (int s = 0; s < l.tp(g); ++s) ranks.push_back(l.leader(g) + s);
      return ranks;
    });
  }
  server.start();
  std::printf("weft: listening on http://%s:%d\n", server_config.host.c_str(), *port);
  std::fflush(stdout);
  setup.engine->run(g_stop);
  // A verdict from here on ends the job as before.
  if (health != nullptr) {
    health->set_failure_hook(nullptr);
    health->set_loss_handler(nullptr);
  }
  std::string monitor_verdict;
  {
    std::lock_guard<std::mutex> lock(g_verdict_mu);
    monitor_verdict = g_verdict;
  }
  const std::string failure = peer_failure(health, monitor_verdict, setup.engine->disaggregation());
  if (!failure.empty()) {
    // The other ranks cannot be released (a collective with a dead rank never ends) and MPI
    // cannot finalize: answer the clients, then leave at once (mpirun's SIGKILL follows its
    // SIGTERM by a second).
    setup.engine->fail_all(absl::StrCat("weft serve: ", failure, "; the server is ending"));
    if (server.wait_answered(std::chrono::milliseconds(500))) {
      // A whole answer's ticket goes when its handler returns, just before the answer is sent.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::fprintf(stderr, "weft serve: rank 0: %s; every request failed, ending (exit code %d)\n",
                 failure.c_str(), comm::kExitCommFailure);
    std::fflush(stderr);
    std::_Exit(comm::kExitCommFailure);
  }
  setup.engine->shutdown();
  server.stop();
  std::fprintf(stderr, "weft: server stopped\n");
  if (health != nullptr && !health->lost_ranks().empty()) {
    std::vector<std::string> names;
    for (int r : health->lost_ranks()) names.push_back(rank_name(r, disagg));
    std::fprintf(stderr, "weft serve: rank 0: served on without %s\n",
                 absl::StrJoin(names, ", ").c_str());
  }
  return absl::OkStatus();
}

}  // namespace weft::cli
