#include "runtime/io/hf_model_files.h"

#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "runtime/core/status.h"
#include "runtime/io/file_util.h"

namespace weft::io {
namespace fs = std::filesystem;

absl::StatusOr<uint64_t> parse_size(const std::string& text) {
  struct Unit {
    const char* suffix;
    uint64_t bytes;
    bool decimal;  // a decimal unit: a lower-case trailing "b" means bits
  };
  constexpr Unit kUnits[] = {{"GIB", uint64_t{1} << 30, false},
                             {"MIB", uint64_t{1} << 20, false},
                             {"KIB", uint64_t{1} << 10, false},
                             {"GB", 1000000000, true},
                             {"MB", 1000000, true},
                             {"KB", 1000, true}};
  const std::string upper = absl::AsciiStrToUpper(text);
  std::string digits = text;
  uint64_t unit = 1;
  bool bits = false;
  for (const Unit& u : kUnits) {
    if (!absl::EndsWith(upper, u.suffix)) continue;
    digits = text.substr(0, text.size() - std::string(u.suffix).size());
    unit = u.bytes;
    bits = u.decimal && text.back() == 'b';
    break;
  }
  uint64_t count = 0;
  if (digits.empty() || !std::isdigit(static_cast<unsigned char>(digits[0])) ||
      !absl::SimpleAtoi(digits, &count) || count == 0 || count > UINT64_MAX / unit) {
    return invalid_argument("size \"", text,
                            "\" is not a positive whole number of bytes or of GB, MB, KB, GiB, "
                            "MiB or KiB (e.g. 5GB, 500MB, 1048576)");
  }
  return bits ? count * unit / 8 : count * unit;
}

namespace {

// transformers' GenerationConfig.from_model_config: the token ids of config.json.
std::string generation_config_from(const std::string& config_json) {
  const nlohmann::json config = nlohmann::json::parse(config_json, nullptr, false);
  nlohmann::ordered_json out = {{"_from_model_config", true}};
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
    if (config.is_object() && config.contains(key) && !config[key].is_null()) {
      out[key] = config[key];
    }
  }
  return out.dump(2) + "\n";
}

}  // namespace

absl::StatusOr<HfSideFiles> write_hf_side_files(const std::string& to,
                                                const std::string& source_dir,
                                                const std::string& config_json) {
  std::vector<std::string> names(std::begin(kTokenizerFiles), std::end(kTokenizerFiles));
  names.emplace_back(kGenerationConfig);
  HfSideFiles written;
  std::error_code ec;
  for (const std::string& name : source_dir.empty() ? std::vector<std::string>() : names) {
    const fs::path from = fs::path(source_dir) / name;
    if (!fs::is_regular_file(from, ec)) continue;
    WEFT_ASSIGN_OR_RETURN(std::string bytes, read_file(from.string()));
    WEFT_RETURN_IF_ERROR(write_file_atomic((fs::path(to) / name).string(), bytes));
    written.copied.push_back(name);
  }
  if (written.copied.empty() || written.copied.back() != kGenerationConfig) {
    WEFT_RETURN_IF_ERROR(write_file_atomic((fs::path(to) / kGenerationConfig).string(),
                                           generation_config_from(config_json)));
    written.generation_from_config = true;
  }
  return written;
}

}  // namespace weft::io
