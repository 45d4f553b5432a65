#include "launch/flags.h"

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

absl::StatusOr<Flags> Flags::parse(const std::vector<std::string>& args,
                                   const std::vector<FlagSpec>& specs) {
  std::map<std::string, const FlagSpec*> by_name;
  for (const FlagSpec& s : specs) by_name[s.name] = &s;
  Flags flags;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.rfind("--", 0) != 0 || arg.size() == 2) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string name = arg.substr(2);
    std::string value;
    bool inline_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    const FlagSpec& spec = *it->second;
    if (spec.kind == FlagKind::kBool) {
      if (inline_value && value != "true" && value != "1") {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " takes no value (got '", value, "')"));
      }
      flags.values_[name] = "true";
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
      value = args[++i];
    }
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
  for (const FlagSpec& s : specs) {
    if (s.required && !flags.has(s.name)) {
      return absl::InvalidArgumentError(absl::StrCat("missing required flag --", s.name));
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
