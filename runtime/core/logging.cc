#include "runtime/core/logging.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace weft {
namespace {

std::atomic<int> g_log_rank{-1};

LogLevel level_from_env() {
  const char* env = std::getenv("WEFT_LOG_LEVEL");
  if (env == nullptr) return LogLevel::kInfo;
  if (std::strcmp(env, "debug") == 0) return LogLevel::kDebug;
  if (std::strcmp(env, "warning") == 0) return LogLevel::kWarning;
  if (std::strcmp(env, "error") == 0) return LogLevel::kError;
  return LogLevel::kInfo;
}

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "D";
    case LogLevel::kInfo: return "I";
    case LogLevel::kWarning: return "W";
    case LogLevel::kError: return "E";
  }
  return "?";
}

}  // namespace

void set_log_rank(int rank) { g_log_rank.store(rank); }

LogLevel min_log_level() {
  static const LogLevel level = level_from_env();
  return level;
}

namespace internal {

LogMessage::LogMessage(LogLevel level, const char* file, int line) : level_(level) {
  const char* base = std::strrchr(file, '/');
  message_ << "[weft " << level_name(level_);
  if (int rank = g_log_rank.load(); rank >= 0) message_ << " r" << rank;
  message_ << " " << (base ? base + 1 : file) << ":" << line << "] ";
}

LogMessage::~LogMessage() {
  message_ << "\n";
  std::fputs(message_.str().c_str(), stderr);
  (void)level_;
}

}  // namespace internal
}  // namespace weft
