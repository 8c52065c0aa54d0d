#include "common/util/file_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rlhf::util {
namespace {

using ::testing::HasSubstr;

std::string TempDir() {
  std::string pattern = ::testing::TempDir() + "file_util_XXXXXX";
  char* dir = ::mkdtemp(pattern.data());
  EXPECT_NE(dir, nullptr);
  return pattern;
}

TEST(WriteFileAtomically, ReplacesContentsAndLeavesNoTempFile) {
  const std::string dir = TempDir();
  const std::string path = dir + "/state.json";
  ASSERT_TRUE(WriteFileAtomically(path, "first").ok());
  ASSERT_TRUE(WriteFileAtomically(path, std::string("second\0with nul", 15)).ok());
  auto contents = ReadFile(path);
  ASSERT_TRUE(contents.ok()) << contents.status();
  EXPECT_EQ(*contents, std::string("second\0with nul", 15));
  // Only the target remains in the folder.
  EXPECT_EQ(std::system(("test $(ls -A " + dir + " | wc -l) -eq 1").c_str()), 0);
}

TEST(WriteFileAtomically, FailsWithNotFoundWhenFolderIsMissing) {
  const absl::Status status = WriteFileAtomically(TempDir() + "/missing/state.json", "x");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("missing/state.json.tmp"));
}

TEST(ReadFile, NamesThePathWhenFileIsMissing) {
  auto contents = ReadFile("/nonexistent/rlhf/file");
  EXPECT_EQ(contents.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(contents.status().message()), HasSubstr("/nonexistent/rlhf/file"));
}

TEST(MakeDirectories, CreatesNestedFoldersAndIsIdempotent) {
  const std::string dir = TempDir() + "/a/b/c";
  ASSERT_TRUE(MakeDirectories(dir).ok());
  ASSERT_TRUE(MakeDirectories(dir).ok());
  struct stat st;
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
}

TEST(MakeDirectories, FailsWhenAFileIsInTheWay) {
  const std::string dir = TempDir();
  ASSERT_TRUE(WriteFileAtomically(dir + "/file", "x").ok());
  const absl::Status status = MakeDirectories(dir + "/file");
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
}

TEST(PathHelpers, TellFilesFromFoldersAndNameTheLastComponent) {
  const std::string dir = TempDir();
  ASSERT_TRUE(WriteFileAtomically(dir + "/a.txt", "abc").ok());
  EXPECT_TRUE(PathExists(dir + "/a.txt"));
  EXPECT_FALSE(IsDirectory(dir + "/a.txt"));
  EXPECT_TRUE(IsDirectory(dir));
  EXPECT_FALSE(PathExists(dir + "/missing"));
  EXPECT_EQ(BaseName("runs/local/"), "local");
  EXPECT_EQ(BaseName("model"), "model");
  ASSERT_TRUE(CopyFileAtomically(dir + "/a.txt", dir + "/b.txt").ok());
  EXPECT_EQ(*ReadFile(dir + "/b.txt"), "abc");
  EXPECT_EQ(CopyFileAtomically(dir + "/missing", dir + "/c.txt").code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(PathExists(dir + "/c.txt"));
}

}  // namespace
}  // namespace rlhf::util
