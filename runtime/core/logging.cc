#include "runtime/core/logging.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

namespace weft {
namespace {

LogLevel level_from_env() {
  const char* env = std::getenv("WEFT_LOG_LEVEL");
  if (env == nullptr) return LogLevel::kInfo;
  if (std::strcmp(env, "debug") == 0) return LogLevel::kDebug;
  if (std::strcmp(env, "warning") == 0) return LogLevel::kWarning;
  if (std::strcmp(env, "error") == 0) return LogLevel::kError;
  return LogLevel::kInfo;
}

spdlog::level::level_enum spdlog_level(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return spdlog::level::debug;
    case LogLevel::kInfo:
      return spdlog::level::info;
    case LogLevel::kWarning:
      return spdlog::level::warn;
    case LogLevel::kError:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

// "[weft I r3 trainer.cc:261] message": spdlog's level letter, the rank once known, the source.
std::string pattern(int rank) {
  return rank >= 0 ? "[weft %L r" + std::to_string(rank) + " %s:%#] %v" : "[weft %L %s:%#] %v";
}

// One stderr logger for the process (spdlog's stderr sink, unbuffered, thread-safe), created on
// first use and never destroyed: comm threads may log while main() returns.
spdlog::logger& logger() {
  static spdlog::logger* log = [] {
    auto* l = new spdlog::logger("weft", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    l->set_pattern(pattern(-1));
    l->set_level(spdlog_level(min_log_level()));
    return l;
  }();
  return *log;
}

}  // namespace

void set_log_rank(int rank) { logger().set_pattern(pattern(rank)); }

LogLevel min_log_level() {
  static const LogLevel level = level_from_env();
  return level;
}

namespace internal {

LogMessage::LogMessage(LogLevel level, const char* file, int line)
    : level_(level), file_(file), line_(line) {}

LogMessage::~LogMessage() {
  logger().log(spdlog::source_loc{file_, line_, ""}, spdlog_level(level_), "{}", message_.str());
}

}  // namespace internal
}  // namespace weft
