// Command-line flags for the `weft` subcommands: `--name value`, `--name=value`, and boolean
// `--name`, parsed with CLI11. Every subcommand declares its flags; anything else is an error
// that names it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace weft::cli {

enum class FlagKind { kString, kInt, kFloat, kBool };

struct FlagSpec {
  std::string name;  // without the dashes: "max-new-tokens"
  FlagKind kind = FlagKind::kString;
  std::string help;
  bool required = false;
  std::optional<int64_t> min;  // kInt: the smallest value accepted when the flag is given
};

class Flags {
 public:
  // Parses `args` (the words after the subcommand) against `specs`. Errors: unknown flag, missing
  // value, a value that is not a number for a numeric flag (floats must be finite: no inf or
  // nan), an integer below its spec's min, a required flag absent.
  static absl::StatusOr<Flags> parse(const std::vector<std::string>& args,
                                     const std::vector<FlagSpec>& specs);

  [[nodiscard]] bool has(const std::string& name) const { return values_.count(name) > 0; }
  [[nodiscard]] std::string str(const std::string& name, const std::string& fallback = "") const;
  [[nodiscard]] int64_t integer(const std::string& name, int64_t fallback = 0) const;
  [[nodiscard]] double number(const std::string& name, double fallback = 0) const;
  [[nodiscard]] bool boolean(const std::string& name) const { return has(name); }
  // Names of the flags given on the command line.
  [[nodiscard]] std::set<std::string> given() const;

 private:
  std::map<std::string, std::string> values_;
};

// "usage: weft SUBCOMMAND [flags]" plus one line per flag.
std::string usage(const std::string& subcommand, const std::string& summary,
                  const std::vector<FlagSpec>& specs);

}  // namespace weft::cli
