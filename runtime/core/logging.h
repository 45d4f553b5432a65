// Leveled logging to stderr through spdlog, prefixed with the rank once the process knows it.
//   WEFT_LOG(INFO) << "loaded " << n << " tensors";
#pragma once

#include <sstream>

namespace weft {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Process-wide logging settings: the rank shown in the prefix, and the minimum level printed
// (WEFT_LOG_LEVEL=debug|info|warning|error in the environment; default info).
void set_log_rank(int rank);
LogLevel min_log_level();

namespace internal {

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  std::ostream& stream() { return message_; }

 private:
  LogLevel level_;
  const char* file_;
  int line_;
  std::ostringstream message_;
};

}  // namespace internal
}  // namespace weft

#define WEFT_LOG_LEVEL_DEBUG ::weft::LogLevel::kDebug
#define WEFT_LOG_LEVEL_INFO ::weft::LogLevel::kInfo
#define WEFT_LOG_LEVEL_WARNING ::weft::LogLevel::kWarning
#define WEFT_LOG_LEVEL_ERROR ::weft::LogLevel::kError

#define WEFT_LOG(level)                                            \
  if (WEFT_LOG_LEVEL_##level < ::weft::min_log_level()) {          \
  } else                                                           \
    ::weft::internal::LogMessage(WEFT_LOG_LEVEL_##level, __FILE__, __LINE__).stream()
