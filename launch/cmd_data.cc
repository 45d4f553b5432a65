// weft data prepare|verify|info
//   prepare  --tokenizer DIR --input TEXT.jsonl --out DATA: tokenize one document per JSON line
//            into the prepared format of runtime/io/indexed_tokens.h, for `weft train --data DATA`
//   verify   --data DATA: sizes, offsets, SHA-256 of both files, every id against the index
//   info     --data DATA [--seq-len T]: what index.json records (and the samples of T per epoch)
// Rank 0 does the work; the command needs no more than one process.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "nlohmann/json.hpp"
#include "runtime/core/status.h"
#include "runtime/io/indexed_tokens.h"
#include "runtime/serve/tokenizer.h"

namespace weft::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The id appended after every document: the tokenizer's eos_token (tokenizer_config.json), or -1
// with --no-eos.
absl::StatusOr<int64_t> eos_id(const serve::Tokenizer& tok, const std::string& dir, bool no_eos) {
  if (no_eos) return -1;
  const std::optional<int32_t> id =
      tok.eos_token().empty() ? std::nullopt : tok.token_to_id(tok.eos_token());
  if (!id) {
    return invalid_argument("the tokenizer in ", dir,
                            " names no eos_token that it knows (tokenizer_config.json): pass "
                            "--no-eos to prepare documents without one");
  }
  return *id;
}

// --out: created when missing; an existing one must be an empty directory unless --force, which
// first removes its index.json (so that a prepare that fails midway leaves no dataset).
absl::Status prepare_out_dir(const std::string& out, bool force) {
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec)) return invalid_argument("--out ", out, " is not a directory");
    if (!fs::is_empty(out, ec) && !force) {
      return invalid_argument("--out ", out,
                              " exists and is not empty (pass --force to replace the data in it)");
    }
    fs::remove(fs::path(out) / "index.json", ec);
    if (ec)
      return absl::InternalError(
          absl::StrCat("cannot remove ", out, "/index.json: ", ec.message()));
  }
  fs::create_directories(out, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create --out ", out, ": ", ec.message()));
  return absl::OkStatus();
}

// The text of one JSON line, or an error naming the file and line.
absl::StatusOr<std::string> document_text(const std::string& line, const std::string& input,
                                          int64_t line_number, const std::string& key) {
  const json value = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!value.is_object()) {
    return invalid_argument(input, ":", line_number,
                            ": expected a JSON object, got: ", line.substr(0, 80));
  }
  const auto it = value.find(key);
  if (it == value.end()) {
    return invalid_argument(input, ":", line_number, ": no \"", key,
                            "\" field (--text-key names the field that holds the text)");
  }
  if (!it->is_string()) {
    return invalid_argument(input, ":", line_number, ": \"", key, "\" is not a string");
  }
  return it->get<std::string>();
}

absl::Status prepare(const Flags& flags) {
  const std::string tokenizer_dir = flags.str("tokenizer");
  const std::string input = flags.str("input");
  const std::string out = flags.str("out");
  const std::string key = flags.str("text-key", "text");
  WEFT_ASSIGN_OR_RETURN(std::unique_ptr<serve::Tokenizer> tok,
                        serve::Tokenizer::load(tokenizer_dir));
  WEFT_ASSIGN_OR_RETURN(const int64_t eos, eos_id(*tok, tokenizer_dir, flags.boolean("no-eos")));
  std::ifstream in(input);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open --input ", input));
  WEFT_RETURN_IF_ERROR(prepare_out_dir(out, flags.boolean("force")));

  io::TokenIndex meta;
  meta.vocab_size = tok->vocab_size();
  meta.eos_id = eos;
  meta.tokenizer = tokenizer_dir;
  meta.source = input;
  meta.text_key = key;
  WEFT_ASSIGN_OR_RETURN(std::unique_ptr<io::IndexedTokensWriter> writer,
                        io::IndexedTokensWriter::create(out, meta));
  std::string line;
  int64_t line_number = 0;
  int64_t documents = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines hold none
    WEFT_ASSIGN_OR_RETURN(const std::string text, document_text(line, input, line_number, key));
    std::vector<int32_t> ids = tok->encode(text, /*add_special_tokens=*/true);
    if (eos >= 0) ids.push_back(static_cast<int32_t>(eos));
    WEFT_RETURN_IF_ERROR(writer->add_document(ids));
    ++documents;
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read --input ", input));
  if (documents == 0) return invalid_argument("--input ", input, " holds no documents");
  WEFT_ASSIGN_OR_RETURN(const io::TokenIndex index, writer->finish());
  std::printf("prepared %s: %lld documents, %lld tokens (%s, vocabulary %lld) from %s\n",
              out.c_str(), static_cast<long long>(index.num_documents),
              static_cast<long long>(index.num_tokens), io::token_dtype_name(index.dtype),
              static_cast<long long>(index.vocab_size), input.c_str());
  return absl::OkStatus();
}

absl::Status verify(const std::string& dir) {
  WEFT_ASSIGN_OR_RETURN(io::IndexedTokens tokens, io::IndexedTokens::open(dir));
  WEFT_RETURN_IF_ERROR(tokens.verify());
  std::printf("OK: %s verified (index, sizes, document offsets, SHA-256, ids up to %lld)\n",
              dir.c_str(), static_cast<long long>(tokens.index().max_id));
  return absl::OkStatus();
}

absl::Status info(const std::string& dir, int64_t seq_len) {
  WEFT_ASSIGN_OR_RETURN(io::IndexedTokens tokens, io::IndexedTokens::open(dir));
  const io::TokenIndex& x = tokens.index();
  const std::string eos = x.eos_id >= 0 ? absl::StrCat(x.eos_id) : "none";
  std::printf(
      "data %s\n  %lld documents, %lld tokens, %s ids, vocabulary %lld, largest id %lld, eos "
      "%s\n  tokenizer %s, source %s (field \"%s\")\n  tokens.bin sha256 %s\n",
      dir.c_str(), static_cast<long long>(x.num_documents), static_cast<long long>(x.num_tokens),
      io::token_dtype_name(x.dtype), static_cast<long long>(x.vocab_size),
      static_cast<long long>(x.max_id), eos.c_str(), x.tokenizer.c_str(), x.source.c_str(),
      x.text_key.c_str(), x.tokens_sha256.c_str());
  if (seq_len >= 2) {
    std::printf("  --seq-len %lld: %lld samples per epoch\n", static_cast<long long>(seq_len),
                static_cast<long long>((x.num_tokens - 1) / (seq_len - 1)));
  }
  return absl::OkStatus();
}

constexpr char kDataUsage[] =
    "usage: weft data ACTION [flags]   (weft data ACTION --help for its flags)\n"
    "  prepare   tokenize JSON lines into a data directory for weft train --data DIR\n"
    "            (--tokenizer DIR --input TEXT.jsonl --out DATA)\n"
    "  verify    sizes, document offsets, SHA-256 checksums and ids of --data DATA\n"
    "  info      what --data DATA holds (with --seq-len T: its samples per epoch)\n";

std::string data_summary(const std::string& action) {
  if (action == "prepare") {
    return "tokenize JSON lines (one document each, EOS appended) into a data directory for "
           "weft train --data DIR";
  }
  if (action == "verify") return "sizes, document offsets, SHA-256 checksums and every id";
  return "what a data directory holds";
}

std::vector<FlagSpec> data_flags(const std::string& action) {
  if (action == "prepare") {
    return {
        {"tokenizer", FlagKind::kString,
         "directory of tokenizer.json (+ tokenizer_config.json) or tokenizer.model", true},
        {"input", FlagKind::kString, "JSON lines, one document per line", true},
        {"out", FlagKind::kString, "the data directory to write", true},
        {"text-key", FlagKind::kString, "the field holding each document's text (default text)"},
        {"no-eos", FlagKind::kBool, "append no EOS after each document"},
        {"force", FlagKind::kBool, "replace the data in a non-empty --out"}};
  }
  std::vector<FlagSpec> specs = {
      {"data", FlagKind::kString, "a data directory of weft data prepare", true}};
  if (action == "info") {
    specs.push_back({"seq-len", FlagKind::kInt, "also count the samples of T tokens", false, 2});
  }
  return specs;
}

}  // namespace

absl::Status run_data(Session& session, const Args& args) {
  const std::string action = args.empty() ? "" : args[0];
  if (action == "--help" || action == "-h" || action == "help") {
    if (session.is_root()) std::fputs(kDataUsage, stdout);
    return absl::OkStatus();
  }
  if (action != "prepare" && action != "verify" && action != "info") {
    return session.agree(
        invalid_argument("data needs an action: prepare, verify or info (see weft data --help)"));
  }
  WEFT_ASSIGN_OR_RETURN(Flags flags,
                        parse_flags(session, "data " + action, data_summary(action),
                                    Args(args.begin() + 1, args.end()), data_flags(action)));
  absl::Status status;
  if (session.is_root()) {
    if (action == "prepare") status = prepare(flags);
    if (action == "verify") status = verify(flags.str("data"));
    if (action == "info") status = info(flags.str("data"), flags.integer("seq-len"));
  }
  return session.agree(status);
}

}  // namespace weft::cli
