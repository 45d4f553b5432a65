#include "launch/flags.h"

#include <CLI/CLI.hpp>
#include <charconv>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace weft::cli {
namespace {

bool parses_as_int(const std::string& s) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() && end == s.data() + s.size();
}

bool parses_as_finite_float(const std::string& s) {
  if (s.empty()) return false;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(v);
}

}  // namespace

// CLI11 splits the words (`--name value`, `--name=value`, boolean flags, a value that looks
// like a negative number) and finds unknown flags and missing values; the checks of each value
// (an integer, its minimum, a finite number) and the error messages are weft's.
absl::StatusOr<Flags> Flags::parse(const std::vector<std::string>& args,
                                   const std::vector<FlagSpec>& specs) {
  CLI::App app("weft");
  app.allow_extras(true);
  app.set_help_flag();  // --help is handled before parsing
  std::map<std::string, std::string> raw;
  std::map<std::string, CLI::Option*> options;
  for (const FlagSpec& s : specs) {
    if (s.kind == FlagKind::kBool) {
      options[s.name] = app.add_flag("--" + s.name);
    } else {
      options[s.name] = app.add_option("--" + s.name, raw[s.name])
                            ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    }
  }
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them reversed
  try {
    app.parse(reversed);
  } catch (const CLI::ArgumentMismatch& e) {
    const std::string what = e.what();  // "--name: 1 required TEXT missing"
    return absl::InvalidArgumentError(
        absl::StrCat(what.substr(0, what.find(':')), " needs a value"));
  } catch (const CLI::ConversionError& e) {
    const std::string what = e.what();  // "Could not convert: --name = value"
    const size_t dashes = what.find("--"), eq = what.find(" = ");
    if (dashes != std::string::npos && eq != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          what.substr(dashes, eq - dashes), " takes no value (got '", what.substr(eq + 3), "')"));
    }
    return absl::InvalidArgumentError(what);
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  if (const std::vector<std::string> rest = app.remaining(); !rest.empty()) {
    const std::string& arg = rest.front();
    if (arg.rfind("--", 0) == 0 && arg.size() > 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag ", arg.substr(0, arg.find('='))));
    }
    return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
  }
  Flags flags;
  for (const FlagSpec& spec : specs) {
    if (options.at(spec.name)->count() == 0) continue;
    const std::string& name = spec.name;
    if (spec.kind == FlagKind::kBool) {
      // "--name=value" reaches a counting flag as its result: only true or 1 is a yes.
      for (const std::string& given : options.at(name)->results()) {
        if (!given.empty() && given != "true" && given != "1") {
          return absl::InvalidArgumentError(
              absl::StrCat("--", name, " takes no value (got '", given, "')"));
        }
      }
    }
    const std::string value = spec.kind == FlagKind::kBool ? "true" : raw.at(name);
    if (spec.kind == FlagKind::kInt && !parses_as_int(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " expects an integer, got '", value, "'"));
    }
    if (spec.kind == FlagKind::kInt && spec.min && std::stoll(value) < *spec.min) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " ", value, " must be >= ", *spec.min));
    }
    if (spec.kind == FlagKind::kFloat && !parses_as_finite_float(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " expects a finite number, got '", value, "'"));
    }
    flags.values_[name] = value;
  }
  for (const FlagSpec& spec : specs) {
    if (spec.required && !flags.has(spec.name)) {
      return absl::InvalidArgumentError(absl::StrCat("missing required flag --", spec.name));
    }
  }
  return flags;
}

std::string Flags::str(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

int64_t Flags::integer(const std::string& name, int64_t fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : std::stoll(it->second);
}

double Flags::number(const std::string& name, double fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : std::strtod(it->second.c_str(), nullptr);
}

std::set<std::string> Flags::given() const {
  std::set<std::string> names;
  for (const auto& [name, value] : values_) names.insert(name);
  return names;
}

std::string usage(const std::string& subcommand, const std::string& summary,
                  const std::vector<FlagSpec>& specs) {
  std::string out = absl::StrCat("usage: weft ", subcommand, " [flags]\n  ", summary, "\n");
  for (const FlagSpec& s : specs) {
    const char* arg = s.kind == FlagKind::kBool    ? ""
                      : s.kind == FlagKind::kInt   ? " N"
                      : s.kind == FlagKind::kFloat ? " X"
                                                   : " VALUE";
    absl::StrAppend(&out, absl::StrFormat("  --%-22s %s%s\n", s.name + arg, s.help,
                                          s.required ? " (required)" : ""));
  }
  return out;
}

}  // namespace weft::cli
