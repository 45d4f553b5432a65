#include "runtime/io/file_util.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/core/check.h"
#include "runtime/core/status.h"

namespace weft::io {
namespace {

absl::Status errno_error(std::string_view what, const std::string& path) {
  const int err = errno;
  std::string message = absl::StrCat(std::string(what), " ", path, ": ", std::strerror(err));
  return err == ENOENT ? absl::NotFoundError(message) : absl::InternalError(message);
}

absl::Status fsync_parent_directory(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_error("cannot open directory", dir);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return errno_error("cannot fsync directory", dir);
  return absl::OkStatus();
}

}  // namespace

absl::Status read_file_chunks(const std::string& path,
                              const std::function<void(std::string_view)>& consume) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_error("cannot open", path);
  std::vector<char> buffer(1 << 20);
  while (true) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status status = errno_error("cannot read", path);
      ::close(fd);
      return status;
    }
    if (n == 0) break;
    consume(std::string_view(buffer.data(), static_cast<size_t>(n)));
  }
  ::close(fd);
  return absl::OkStatus();
}

absl::StatusOr<std::string> read_file(const std::string& path) {
  std::string bytes;
  WEFT_RETURN_IF_ERROR(
      read_file_chunks(path, [&](std::string_view chunk) { bytes.append(chunk); }));
  return bytes;
}

absl::Status write_file_atomic(const std::string& path, std::string_view bytes) {
  AtomicFileWriter writer(path);
  WEFT_RETURN_IF_ERROR(writer.open());
  WEFT_RETURN_IF_ERROR(writer.append(bytes));
  return writer.commit();
}

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), tmp_path_(absl::StrCat(path_, ".tmp.", ::getpid())) {}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !tmp_path_.empty()) ::unlink(tmp_path_.c_str());
}

absl::Status AtomicFileWriter::open() {
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) return errno_error("cannot create", tmp_path_);
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::append(const void* data, size_t bytes) {
  WEFT_CHECK(fd_ >= 0) << "append to " << tmp_path_ << " before open() or after commit()";
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd_, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("cannot write", tmp_path_);
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::commit() {
  WEFT_CHECK(fd_ >= 0) << "commit of " << tmp_path_ << " before open() or twice";
  if (::fsync(fd_) != 0) return errno_error("cannot fsync", tmp_path_);
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) return errno_error("cannot close", tmp_path_);
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    return errno_error(absl::StrCat("cannot rename ", tmp_path_, " to"), path_);
  }
  committed_ = true;
  return fsync_parent_directory(path_);
}

absl::StatusOr<std::shared_ptr<MappedFile>> MappedFile::map(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_error("cannot open", path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    absl::Status status = errno_error("cannot stat", path);
    ::close(fd);
    return status;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  char* data = nullptr;
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      absl::Status status = errno_error("cannot mmap", path);
      ::close(fd);
      return status;
    }
    data = static_cast<char*>(p);
  }
  ::close(fd);  // the mapping stays valid without the descriptor
  return std::shared_ptr<MappedFile>(new MappedFile(path, data, size));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

}  // namespace weft::io
