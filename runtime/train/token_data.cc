#include "runtime/train/token_data.h"

#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "runtime/core/status.h"
#include "runtime/train/indexed_token_data.h"

namespace weft::train {

absl::StatusOr<std::unique_ptr<TokenDataset>> open_token_data(const std::string& path,
                                                              int64_t seq_len, uint64_t data_seed) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    WEFT_ASSIGN_OR_RETURN(std::unique_ptr<IndexedTokenData> data,
                          IndexedTokenData::open(path, seq_len, data_seed));
    return data;
  }
  WEFT_ASSIGN_OR_RETURN(TokenFile file, TokenFile::load(path));
  return std::make_unique<TokenFile>(std::move(file));
}

absl::StatusOr<TokenFile> TokenFile::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open token file '", path, "'"));
  TokenFile file;
  file.path_ = path;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    const char* p = line.data();
    const char* end = p + line.size();
    int64_t count = 0;
    while (p < end) {
      while (p < end && (*p == ' ' || *p == '\t' || *p == '\r')) ++p;
      if (p == end) break;
      int64_t id = 0;
      auto [next, ec] = std::from_chars(p, end, id);
      if (ec != std::errc() || (next < end && *next != ' ' && *next != '\t' && *next != '\r')) {
        const char* stop = p;
        while (stop < end && *stop != ' ' && *stop != '\t') ++stop;
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", line_no, ": '", std::string(p, stop), "' is not a token id"));
      }
      if (id < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", line_no, ": negative token id ", id));
      }
      file.ids_.push_back(id);
      file.max_id_ = std::max(file.max_id_, id);
      ++count;
      p = next;
    }
    if (count == 0) continue;  // blank lines separate nothing; skip them
    if (file.seq_len_ == 0) file.seq_len_ = count;
    if (count != file.seq_len_) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": ", count,
                                                     " tokens, but earlier lines have ",
                                                     file.seq_len_, " (all lines must be equal)"));
    }
    ++file.num_sequences_;
  }
  if (file.num_sequences_ == 0) {
    return absl::InvalidArgumentError(absl::StrCat("token file '", path, "' has no sequences"));
  }
  return file;
}

Tensor TokenFile::sequences(int64_t first, int64_t count) const {
  Tensor out = Tensor::empty({count, seq_len_}, DType::kI64, Device::cpu());
  int64_t* dst = out.data<int64_t>();
  for (int64_t i = 0; i < count; ++i) {
    const int64_t line = (first + i) % num_sequences_;
    std::memcpy(dst + i * seq_len_, ids_.data() + line * seq_len_, seq_len_ * sizeof(int64_t));
  }
  return out;
}

Range split_evenly(int64_t total, int parts, int index) {
  const int64_t base = total / parts;
  const int64_t extra = total % parts;
  Range r;
  r.begin = index * base + std::min<int64_t>(index, extra);
  r.end = r.begin + base + (index < extra ? 1 : 0);
  return r;
}

}  // namespace weft::train
