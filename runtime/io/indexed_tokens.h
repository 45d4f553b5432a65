// The prepared token data of `weft data prepare` (docs/architecture.md "Training data"):
// Megatron's indexed dataset, simplified to one directory of three files:
//
//   tokens.bin       every document's ids, concatenated: little-endian uint16 when the
//                    tokenizer's vocabulary fits (vocab_size <= 65536), else uint32
//   doc_offsets.bin  num_documents + 1 little-endian int64: document d is the ids
//                    [offsets[d], offsets[d + 1]); offsets[0] = 0, offsets[D] = num_tokens
//   index.json       format name and version, dtype, counts, the largest id, the tokenizer, and
//                    the SHA-256 of both binary files
//
// Each file is written under a temporary name and renamed when complete, index.json last: a
// directory without index.json is no dataset, and a crashed prepare leaves nothing that looks
// complete.
#pragma once

#include <bit>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/io/file_util.h"
#include "runtime/io/sha256.h"

namespace weft::io {

static_assert(std::endian::native == std::endian::little,
              "tokens.bin and doc_offsets.bin are little-endian and read in place");

enum class TokenDtype { kU16, kU32 };

struct TokenIndex {
  static constexpr char kFormat[] = "weft.indexed_tokens";
  static constexpr int kVersion = 1;

  TokenDtype dtype = TokenDtype::kU32;
  int64_t vocab_size = 0;  // the tokenizer's: every id is below it
  int64_t max_id = -1;     // the largest id in tokens.bin
  int64_t num_documents = 0;
  int64_t num_tokens = 0;
  int64_t eos_id = -1;    // appended after every document (-1: none, --no-eos)
  std::string tokenizer;  // the tokenizer directory's name
  std::string source;     // the input file's name
  std::string text_key;   // the JSON field that held each document's text
  std::string tokens_sha256;
  std::string doc_offsets_sha256;

  // Bytes per id in tokens.bin.
  [[nodiscard]] int64_t id_bytes() const { return dtype == TokenDtype::kU16 ? 2 : 4; }
};

// The dtype that holds every id below `vocab_size`.
TokenDtype token_dtype_for(int64_t vocab_size);
const char* token_dtype_name(TokenDtype dtype);  // "uint16", "uint32"

// Streams documents into DIR: create(), add_document() per document, finish().
class IndexedTokensWriter {
 public:
  // `meta` gives vocab_size, eos_id and the provenance (tokenizer, source, text_key); the writer
  // fills in the rest. DIR must exist.
  static absl::StatusOr<std::unique_ptr<IndexedTokensWriter>> create(const std::string& dir,
                                                                     const TokenIndex& meta);

  // Appends one document. An id outside [0, vocab_size) is an error naming it.
  absl::Status add_document(std::span<const int32_t> ids);
  // Commits tokens.bin and doc_offsets.bin, then index.json; returns what index.json holds.
  // Without a finish() (an error, a crash) only temporary files are left.
  absl::StatusOr<TokenIndex> finish();

 private:
  IndexedTokensWriter(const std::string& dir, const TokenIndex& meta);
  absl::Status flush();

  std::string dir_;
  TokenIndex index_;
  AtomicFileWriter tokens_;
  Sha256 tokens_sha_;
  std::string buffer_;            // encoded ids not yet written
  std::vector<int64_t> offsets_;  // [num_documents + 1]
};

// A prepared directory opened for reading: both binary files mapped.
class IndexedTokens {
 public:
  // Reads DIR/index.json and maps tokens.bin and doc_offsets.bin. Checks the format and
  // version, that each file's size is what the index says, and that the document offsets rise
  // from 0 to num_tokens. Does not read the ids themselves (verify() does: its cost is the
  // data's size). Errors name the file.
  static absl::StatusOr<IndexedTokens> open(const std::string& dir);

  // Reads every byte: both files' SHA-256 against the index, and every id against max_id and
  // vocab_size. DataLoss naming the file on a mismatch.
  [[nodiscard]] absl::Status verify() const;

  [[nodiscard]] const TokenIndex& index() const { return index_; }
  [[nodiscard]] const std::string& dir() const { return dir_; }
  [[nodiscard]] std::string tokens_path() const;
  // Ids [first, first + count) of tokens.bin, widened into out[0, count); the range must lie
  // inside [0, num_tokens). Returns the largest of them.
  int64_t read(int64_t first, int64_t count, int64_t* out) const;
  // [num_documents + 1]
  [[nodiscard]] std::span<const int64_t> doc_offsets() const;

 private:
  std::string dir_;
  TokenIndex index_;
  std::shared_ptr<MappedFile> tokens_;
  std::shared_ptr<MappedFile> offsets_;
};

}  // namespace weft::io
