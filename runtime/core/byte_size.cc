#include "runtime/core/byte_size.h"

#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"

namespace weft {

std::optional<int64_t> parse_byte_size(const std::string& text) {
  std::string t = absl::AsciiStrToLower(text);
  double scale = 1;
  for (const auto& [suffix, s] : std::vector<std::pair<std::string, double>>{{"gib", 1 << 30},
                                                                             {"mib", 1 << 20},
                                                                             {"kib", 1 << 10},
                                                                             {"gb", 1e9},
                                                                             {"mb", 1e6},
                                                                             {"kb", 1e3},
                                                                             {"g", 1 << 30},
                                                                             {"m", 1 << 20},
                                                                             {"k", 1 << 10},
                                                                             {"b", 1}}) {
    if (t.size() > suffix.size() && t.substr(t.size() - suffix.size()) == suffix) {
      t.resize(t.size() - suffix.size());
      scale = s;
      break;
    }
  }
  double value = 0;
  if (!absl::SimpleAtod(t, &value) || !std::isfinite(value) || value <= 0) return std::nullopt;
  return static_cast<int64_t>(value * scale);
}

}  // namespace weft
