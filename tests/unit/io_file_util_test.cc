#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "runtime/io/file_util.h"
#include "tests/support/test_util.h"

namespace weft::io {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

size_t entries_in(const std::string& dir) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

TEST(FileUtil, WriteAtomicReplacesAndLeavesNoTemporary) {
  const std::string dir = testing::make_temp_dir("io_file_");
  const std::string path = dir + "/f";
  ASSERT_TRUE(write_file_atomic(path, "first").ok());
  ASSERT_TRUE(write_file_atomic(path, std::string("sec\0ond", 7)).ok());
  EXPECT_EQ(*read_file(path), std::string("sec\0ond", 7));
  EXPECT_EQ(entries_in(dir), 1u);
}

TEST(FileUtil, AnUncommittedWriterLeavesTheOldFile) {
  const std::string dir = testing::make_temp_dir("io_file_");
  const std::string path = dir + "/f";
  ASSERT_TRUE(write_file_atomic(path, "old").ok());
  {
    AtomicFileWriter writer(path);
    ASSERT_TRUE(writer.open().ok());
    ASSERT_TRUE(writer.append("new but abandoned").ok());
    EXPECT_EQ(entries_in(dir), 2u);  // the temporary file exists while writing
  }
  EXPECT_EQ(*read_file(path), "old");
  EXPECT_EQ(entries_in(dir), 1u);
}

TEST(FileUtil, ErrorsNameThePath) {
  const std::string dir = testing::make_temp_dir("io_file_");
  auto missing = read_file(dir + "/absent");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("cannot open " + dir + "/absent"));
  absl::Status no_dir = write_file_atomic(dir + "/no/such/f", "x");
  EXPECT_THAT(std::string(no_dir.message()), HasSubstr(dir + "/no/such/f"));
  auto not_file = MappedFile::map(dir);
  EXPECT_THAT(std::string(not_file.status().message()), HasSubstr(dir + " is not a regular file"));
}

TEST(FileUtil, MapSeesTheWholeFile) {
  const std::string dir = testing::make_temp_dir("io_file_");
  ASSERT_TRUE(write_file_atomic(dir + "/f", "mapped bytes").ok());
  auto mapping = MappedFile::map(dir + "/f");
  ASSERT_TRUE(mapping.ok()) << mapping.status();
  EXPECT_EQ(std::string((*mapping)->data(), (*mapping)->size()), "mapped bytes");
  ASSERT_TRUE(write_file_atomic(dir + "/empty", "").ok());
  auto empty = MappedFile::map(dir + "/empty");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ((*empty)->size(), 0u);
}

}  // namespace
}  // namespace weft::io
