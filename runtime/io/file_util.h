// Whole-file reads, crash-safe writes (temporary file + fsync + rename) and read-only mappings.
// Every error names the path and the system's reason.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace weft::io {

absl::StatusOr<std::string> read_file(const std::string& path);
// Streams the file through `consume` in reads of up to 1 MiB, for files too large to hold.
absl::Status read_file_chunks(const std::string& path,
                              const std::function<void(std::string_view)>& consume);

// Writes `bytes` to "<path>.tmp.<pid>", fsyncs it and renames it over `path`: a reader sees the
// old file or the new one, never a part, and a failure leaves the old file untouched.
absl::Status write_file_atomic(const std::string& path, std::string_view bytes);

// The streaming form of write_file_atomic, for files too large to build in memory:
//   AtomicFileWriter w(path); WEFT_RETURN_IF_ERROR(w.open()); w.append(...); ... w.commit();
// Destroying an uncommitted writer removes the temporary file.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  absl::Status open();
  absl::Status append(const void* data, size_t bytes);
  absl::Status append(std::string_view bytes) { return append(bytes.data(), bytes.size()); }
  // fsync, close, rename over the final path, fsync the directory.
  absl::Status commit();

 private:
  std::string path_;
  std::string tmp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

// A whole file mapped copy-on-write: reads come from the page cache, and a write into the
// mapping (a caller modifying a borrowed tensor in place) stays private to this process.
class MappedFile {
 public:
  static absl::StatusOr<std::shared_ptr<MappedFile>> map(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  [[nodiscard]] char* data() const { return data_; }
  [[nodiscard]] size_t size() const { return size_; }
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, char* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::string path_;
  char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace weft::io
