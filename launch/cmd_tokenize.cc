// weft tokenize --model DIR [--no-special | --decode]
// Reads one JSON string per line on stdin and prints one JSON array of token ids per line
// (--decode: arrays of ids in, strings out, special tokens kept). An id at or above the vocab size
// is an error naming the line (HF's decode would drop it silently). Rank 0 does the work; the
// command needs no more than one process.
#include <cstdio>
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "nlohmann/json.hpp"
#include "runtime/core/status.h"
#include "runtime/serve/tokenizer.h"

namespace weft::cli {
namespace {

using nlohmann::json;

// One output line for one input line, or an error naming the line.
absl::StatusOr<std::string> process_line(const serve::Tokenizer& tok, const std::string& line,
                                         int64_t line_number, bool decode, bool add_special) {
  const json value = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (decode) {
    std::vector<int32_t> ids;
    bool ok = value.is_array();
    for (const json& id : ok ? value : json::array()) {
      ok = ok && id.is_number_integer() && id.get<int64_t>() >= 0 &&
           id.get<int64_t>() < tok.vocab_size();
      if (ok) ids.push_back(id.get<int32_t>());
    }
    if (!ok) {
      return invalid_argument("stdin line ", line_number,
                              ": expected a JSON array of token ids below ", tok.vocab_size(),
                              ", got: ", line.substr(0, 80));
    }
    return json(tok.decode(ids, /*skip_special_tokens=*/false)).dump();
  }
  if (!value.is_string()) {
    return invalid_argument("stdin line ", line_number,
                            ": expected a JSON string, got: ", line.substr(0, 80));
  }
  std::string out = "[";
  bool first = true;
  for (int32_t id : tok.encode(value.get_ref<const std::string&>(), add_special)) {
    absl::StrAppend(&out, first ? "" : ",", id);
    first = false;
  }
  out += "]";
  return out;
}

}  // namespace

absl::Status run_tokenize(Session& session, const Args& args) {
  WEFT_ASSIGN_OR_RETURN(
      Flags flags,
      parse_flags(session, "tokenize",
                  "JSON strings on stdin -> JSON arrays of token ids on stdout, one per line", args,
                  {{"model", FlagKind::kString, "model directory (tokenizer.json or .model)", true},
                   {"no-special", FlagKind::kBool, "add no special tokens (BOS, ...)"},
                   {"decode", FlagKind::kBool, "arrays of ids in, strings out"}}));
  if (!session.is_root()) return absl::OkStatus();
  WEFT_ASSIGN_OR_RETURN(std::unique_ptr<serve::Tokenizer> tok,
                        serve::Tokenizer::load(flags.str("model")));
  std::ios::sync_with_stdio(false);
  std::string line;
  std::string out;
  int64_t line_number = 0;
  while (std::getline(std::cin, line)) {
    ++line_number;
    absl::StatusOr<std::string> result = process_line(
        *tok, line, line_number, flags.boolean("decode"), !flags.boolean("no-special"));
    if (!result.ok()) {
      std::fwrite(out.data(), 1, out.size(), stdout);
      std::fflush(stdout);
      return result.status();
    }
    absl::StrAppend(&out, *result, "\n");
    if (out.size() > (1 << 16)) {
      std::fwrite(out.data(), 1, out.size(), stdout);
      out.clear();
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  return absl::OkStatus();
}

}  // namespace weft::cli
