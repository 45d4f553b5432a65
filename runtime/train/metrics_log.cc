#include "runtime/train/metrics_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "runtime/io/file_util.h"

namespace weft::train {
namespace {

absl::Status system_error(const std::string& what, const std::string& path) {
  return absl::InternalError(
      absl::StrCat("metrics file '", path, "': ", what, " failed: ", std::strerror(errno)));
}

// The lines of an earlier run's file that a run resumed at `resume_step` keeps.
std::string kept_records(const std::string& text, int64_t resume_step) {
  std::string kept;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded() || !record.is_object() || !record.contains("step") ||
        !record["step"].is_number_integer() || record["step"].get<int64_t>() > resume_step) {
      continue;
    }
    absl::StrAppend(&kept, line, "\n");
  }
  return kept;
}

}  // namespace

std::string metrics_json_line(const StepMetrics& m) {
  nlohmann::ordered_json j;
  nlohmann::json nonfinite = nlohmann::json::array();
  j["step"] = m.step;
  for (const auto& [key, value] : {std::pair{"loss", m.loss},
                                   {"grad_norm", m.grad_norm},
                                   {"lr", m.lr},
                                   {"step_time_s", m.step_time_s},
                                   {"tokens_per_s", m.tokens_per_s}}) {
    if (std::isfinite(value)) {
      j[key] = value;
    } else {
      j[key] = nullptr;
      nonfinite.push_back(key);
    }
  }
  j["peak_bytes"] = m.peak_bytes;
  j["checkpoint_wait_s"] = m.checkpoint_wait_s;
  if (m.moe_drop_rate >= 0) j["moe_drop_rate"] = m.moe_drop_rate;
  if (m.moe_aux_loss >= 0) j["moe_aux_loss"] = m.moe_aux_loss;
  if (m.eval_loss) {
    if (std::isfinite(*m.eval_loss)) {
      j["eval_loss"] = *m.eval_loss;
    } else {
      j["eval_loss"] = nullptr;
      nonfinite.push_back("eval_loss");
    }
  }
  if (!nonfinite.empty()) j["nonfinite"] = nonfinite;
  if (m.skipped) j["skipped"] = true;
  return j.dump() + "\n";
}

absl::StatusOr<MetricsLog> MetricsLog::open(const std::string& path, int64_t resume_step) {
  int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC;
  std::error_code ec;
  if (resume_step == 0) {
    flags |= O_TRUNC;
  } else if (std::filesystem::exists(path, ec) && std::filesystem::is_regular_file(path, ec)) {
    absl::StatusOr<std::string> text = io::read_file(path);
    if (!text.ok()) return text.status();
    const std::string kept = kept_records(*text, resume_step);
    if (kept != *text) {
      absl::Status rewritten = io::write_file_atomic(path, kept);
      if (!rewritten.ok()) {
        return absl::InternalError(absl::StrCat("metrics file '", path,
                                                "': cannot drop the records after step ",
                                                resume_step, ": ", rewritten.message()));
      }
    }
  }
  const int fd = ::open(path.c_str(), flags, 0644);
  if (fd < 0) return system_error("open", path);
  return MetricsLog(path, fd);
}

MetricsLog::MetricsLog(MetricsLog&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}

MetricsLog& MetricsLog::operator=(MetricsLog&& other) noexcept {
  if (this != &other) {
    (void)close();
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

MetricsLog::~MetricsLog() { (void)close(); }

absl::Status MetricsLog::append(const StepMetrics& m) {
  const std::string line = metrics_json_line(m);
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return system_error(absl::StrCat("writing step ", m.step), path_);
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status MetricsLog::close() {
  if (fd_ < 0) return absl::OkStatus();
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) return system_error("close", path_);
  return absl::OkStatus();
}

}  // namespace weft::train
