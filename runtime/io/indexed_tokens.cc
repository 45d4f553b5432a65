#include "runtime/io/indexed_tokens.h"

#include <algorithm>
#include <filesystem>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/core/check.h"
#include "runtime/core/status.h"

namespace weft::io {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

constexpr char kIndexFile[] = "index.json";
constexpr char kTokensFile[] = "tokens.bin";
constexpr char kOffsetsFile[] = "doc_offsets.bin";
constexpr size_t kFlushBytes = size_t{1} << 20;

std::string join(const std::string& dir, const char* file) {
  return (std::filesystem::path(dir) / file).string();
}

std::string index_json(const TokenIndex& x) {
  ordered_json j;
  j["format"] = TokenIndex::kFormat;
  j["version"] = TokenIndex::kVersion;
  j["dtype"] = token_dtype_name(x.dtype);
  j["vocab_size"] = x.vocab_size;
  j["max_id"] = x.max_id;
  j["num_documents"] = x.num_documents;
  j["num_tokens"] = x.num_tokens;
  j["eos_id"] = x.eos_id >= 0 ? ordered_json(x.eos_id) : ordered_json(nullptr);
  j["tokenizer"] = x.tokenizer;
  j["source"] = x.source;
  j["text_key"] = x.text_key;
  j["tokens_file"] = kTokensFile;
  j["tokens_sha256"] = x.tokens_sha256;
  j["doc_offsets_file"] = kOffsetsFile;
  j["doc_offsets_sha256"] = x.doc_offsets_sha256;
  return j.dump(2) + "\n";
}

// Field `key` of index.json as T, or an error naming the file and the field.
template <typename T>
absl::StatusOr<T> field(const json& j, const char* key, const std::string& path) {
  const auto it = j.find(key);
  bool ok = it != j.end();
  if constexpr (std::is_same_v<T, std::string>) {
    ok = ok && it->is_string();
  } else {
    ok = ok && it->is_number_integer();
  }
  if (!ok) {
    return absl::DataLossError(
        absl::StrCat(path, ": \"", key, "\" is missing or not ",
                     std::is_same_v<T, std::string> ? "a string" : "an integer"));
  }
  return it->get<T>();
}

absl::StatusOr<TokenIndex> parse_index(const std::string& path) {
  WEFT_ASSIGN_OR_RETURN(const std::string text, read_file(path));
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return absl::DataLossError(absl::StrCat(path, " is not a JSON object"));
  WEFT_ASSIGN_OR_RETURN(const std::string format, field<std::string>(j, "format", path));
  WEFT_ASSIGN_OR_RETURN(const int64_t version, field<int64_t>(j, "version", path));
  if (format != TokenIndex::kFormat || version != TokenIndex::kVersion) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": format \"", format, "\" version ",
                                                   version, " is not ", TokenIndex::kFormat,
                                                   " version ", TokenIndex::kVersion));
  }
  TokenIndex x;
  WEFT_ASSIGN_OR_RETURN(const std::string dtype, field<std::string>(j, "dtype", path));
  if (dtype != "uint16" && dtype != "uint32") {
    return absl::DataLossError(
        absl::StrCat(path, ": dtype \"", dtype, "\" is not uint16 or uint32"));
  }
  x.dtype = dtype == "uint16" ? TokenDtype::kU16 : TokenDtype::kU32;
  WEFT_ASSIGN_OR_RETURN(x.vocab_size, field<int64_t>(j, "vocab_size", path));
  WEFT_ASSIGN_OR_RETURN(x.max_id, field<int64_t>(j, "max_id", path));
  WEFT_ASSIGN_OR_RETURN(x.num_documents, field<int64_t>(j, "num_documents", path));
  WEFT_ASSIGN_OR_RETURN(x.num_tokens, field<int64_t>(j, "num_tokens", path));
  if (j.contains("eos_id") && !j["eos_id"].is_null()) {
    WEFT_ASSIGN_OR_RETURN(x.eos_id, field<int64_t>(j, "eos_id", path));
  }
  WEFT_ASSIGN_OR_RETURN(x.tokenizer, field<std::string>(j, "tokenizer", path));
  WEFT_ASSIGN_OR_RETURN(x.source, field<std::string>(j, "source", path));
  WEFT_ASSIGN_OR_RETURN(x.text_key, field<std::string>(j, "text_key", path));
  WEFT_ASSIGN_OR_RETURN(x.tokens_sha256, field<std::string>(j, "tokens_sha256", path));
  WEFT_ASSIGN_OR_RETURN(x.doc_offsets_sha256, field<std::string>(j, "doc_offsets_sha256", path));
  if (x.num_tokens <= 0 || x.num_documents <= 0 || x.max_id < 0 || x.max_id >= x.vocab_size ||
      token_dtype_for(x.vocab_size) != x.dtype) {
    return absl::DataLossError(absl::StrCat(path, ": inconsistent counts (num_tokens ",
                                            x.num_tokens, ", num_documents ", x.num_documents,
                                            ", max_id ", x.max_id, ", vocab_size ", x.vocab_size,
                                            ", dtype ", dtype, ")"));
  }
  return x;
}

// Maps DIR/file and checks that it holds `bytes` bytes.
absl::StatusOr<std::shared_ptr<MappedFile>> map_sized(const std::string& path, int64_t bytes) {
  WEFT_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::map(path));
  if (static_cast<int64_t>(file->size()) != bytes) {
    return absl::DataLossError(absl::StrCat(path, " holds ", file->size(), " bytes; ", kIndexFile,
                                            " says ", bytes, " (truncated or not this dataset's)"));
  }
  return file;
}

}  // namespace

const char* token_dtype_name(TokenDtype dtype) {
  return dtype == TokenDtype::kU16 ? "uint16" : "uint32";
}

TokenDtype token_dtype_for(int64_t vocab_size) {
  return vocab_size <= (int64_t{1} << 16) ? TokenDtype::kU16 : TokenDtype::kU32;
}

IndexedTokensWriter::IndexedTokensWriter(const std::string& dir, const TokenIndex& meta)
    : dir_(dir), index_(meta), tokens_(join(dir, kTokensFile)), offsets_{0} {
  index_.dtype = token_dtype_for(meta.vocab_size);
  index_.max_id = -1;
  index_.num_documents = 0;
  index_.num_tokens = 0;
}

absl::StatusOr<std::unique_ptr<IndexedTokensWriter>> IndexedTokensWriter::create(
    const std::string& dir, const TokenIndex& meta) {
  if (meta.vocab_size <= 0 || meta.vocab_size > (int64_t{1} << 32)) {
    return invalid_argument("vocabulary size ", meta.vocab_size, " is not in [1, 2^32]");
  }
  std::unique_ptr<IndexedTokensWriter> writer(new IndexedTokensWriter(dir, meta));
  WEFT_RETURN_IF_ERROR(writer->tokens_.open());
  return writer;
}

absl::Status IndexedTokensWriter::add_document(std::span<const int32_t> ids) {
  for (const int32_t id : ids) {
    if (id < 0 || id >= index_.vocab_size) {
      return invalid_argument("token id ", id, " of document ", index_.num_documents,
                              " is outside the vocabulary [0, ", index_.vocab_size, ")");
    }
    index_.max_id = std::max<int64_t>(index_.max_id, id);
    if (index_.dtype == TokenDtype::kU16) {
      const uint16_t v = static_cast<uint16_t>(id);
      buffer_.append(reinterpret_cast<const char*>(&v), sizeof(v));
    } else {
      const uint32_t v = static_cast<uint32_t>(id);
      buffer_.append(reinterpret_cast<const char*>(&v), sizeof(v));
    }
  }
  index_.num_tokens += static_cast<int64_t>(ids.size());
  ++index_.num_documents;
  offsets_.push_back(index_.num_tokens);
  return buffer_.size() >= kFlushBytes ? flush() : absl::OkStatus();
}

absl::Status IndexedTokensWriter::flush() {
  tokens_sha_.update(buffer_);
  WEFT_RETURN_IF_ERROR(tokens_.append(buffer_));
  buffer_.clear();
  return absl::OkStatus();
}

absl::StatusOr<TokenIndex> IndexedTokensWriter::finish() {
  if (index_.num_tokens == 0) {
    return invalid_argument("no tokens to write (", index_.num_documents, " empty documents)");
  }
  WEFT_RETURN_IF_ERROR(flush());
  index_.tokens_sha256 = tokens_sha_.hex_digest();
  const std::string_view offsets(reinterpret_cast<const char*>(offsets_.data()),
                                 offsets_.size() * sizeof(int64_t));
  index_.doc_offsets_sha256 = sha256_hex(offsets);
  WEFT_RETURN_IF_ERROR(tokens_.commit());
  WEFT_RETURN_IF_ERROR(write_file_atomic(join(dir_, kOffsetsFile), offsets));
  WEFT_RETURN_IF_ERROR(write_file_atomic(join(dir_, kIndexFile), index_json(index_)));
  return index_;
}

absl::StatusOr<IndexedTokens> IndexedTokens::open(const std::string& dir) {
  const std::string index_path = join(dir, kIndexFile);
  std::error_code ec;
  if (!std::filesystem::exists(index_path, ec)) {
    return absl::NotFoundError(
        absl::StrCat(dir, " holds no ", kIndexFile,
                     " (not a directory written by `weft data prepare`, or one "
                     "whose prepare did not finish)"));
  }
  IndexedTokens t;
  t.dir_ = dir;
  WEFT_ASSIGN_OR_RETURN(t.index_, parse_index(index_path));
  WEFT_ASSIGN_OR_RETURN(
      t.tokens_, map_sized(join(dir, kTokensFile), t.index_.num_tokens * t.index_.id_bytes()));
  WEFT_ASSIGN_OR_RETURN(t.offsets_,
                        map_sized(join(dir, kOffsetsFile), (t.index_.num_documents + 1) * 8));
  const std::span<const int64_t> offsets = t.doc_offsets();
  for (size_t d = 0; d + 1 < offsets.size(); ++d) {
    if (offsets[d] > offsets[d + 1]) {
      return absl::DataLossError(absl::StrCat(join(dir, kOffsetsFile), ": document ", d,
                                              " ends before it starts (", offsets[d], " > ",
                                              offsets[d + 1], ")"));
    }
  }
  if (offsets.front() != 0 || offsets.back() != t.index_.num_tokens) {
    return absl::DataLossError(absl::StrCat(join(dir, kOffsetsFile), ": offsets run from ",
                                            offsets.front(), " to ", offsets.back(), ", not 0 to ",
                                            t.index_.num_tokens));
  }
  return t;
}

absl::Status IndexedTokens::verify() const {
  for (const auto& [file, want] : {std::pair{tokens_.get(), index_.tokens_sha256},
                                   std::pair{offsets_.get(), index_.doc_offsets_sha256}}) {
    const std::string got = sha256_hex(std::string_view(file->data(), file->size()));
    if (got != want) {
      return absl::DataLossError(absl::StrCat(file->path(), ": SHA-256 ", got, " differs from ",
                                              kIndexFile, "'s ", want, " (the file is damaged)"));
    }
  }
  int64_t max_id = -1;
  std::vector<int64_t> ids(int64_t{1} << 16);
  for (int64_t first = 0; first < index_.num_tokens; first += std::ssize(ids)) {
    const int64_t count = std::min<int64_t>(std::ssize(ids), index_.num_tokens - first);
    max_id = std::max(max_id, read(first, count, ids.data()));
  }
  if (max_id != index_.max_id) {
    return absl::DataLossError(absl::StrCat(tokens_path(), ": the largest id is ", max_id, "; ",
                                            kIndexFile, " says ", index_.max_id));
  }
  return absl::OkStatus();
}

std::string IndexedTokens::tokens_path() const { return join(dir_, kTokensFile); }

namespace {

template <typename T>
int64_t widen(const char* data, int64_t first, int64_t count, int64_t* out) {
  const T* ids = reinterpret_cast<const T*>(data) + first;
  T max_id = 0;
  for (int64_t i = 0; i < count; ++i) {
    out[i] = ids[i];
    max_id = std::max(max_id, ids[i]);
  }
  return count > 0 ? max_id : -1;
}

}  // namespace

int64_t IndexedTokens::read(int64_t first, int64_t count, int64_t* out) const {
  WEFT_CHECK(first >= 0 && count >= 0 && first + count <= index_.num_tokens)
      << "ids [" << first << ", " << first + count << ") of " << index_.num_tokens;
  return index_.dtype == TokenDtype::kU16 ? widen<uint16_t>(tokens_->data(), first, count, out)
                                          : widen<uint32_t>(tokens_->data(), first, count, out);
}

std::span<const int64_t> IndexedTokens::doc_offsets() const {
  return {reinterpret_cast<const int64_t*>(offsets_->data()),
          static_cast<size_t>(index_.num_documents + 1)};
}

}  // namespace weft::io
