#include "common/util/file_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/small_filesystem.h"

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

// The names in `dir` (not recursive), sorted.
std::vector<std::string> Listing(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(WriteFileAtomically, AFullDiskFailsWithResourceExhaustedAndKeepsTheOldFile) {
  RLHF_MOUNT_SMALL_FILESYSTEM_OR_SKIP(fs, 256 << 10);
  const std::string path = fs->path() + "/state.json";
  ASSERT_TRUE(WriteFileAtomically(path, "old").ok());
  ASSERT_TRUE(fs->Fill().ok());
  const absl::Status full = WriteFileAtomically(path, std::string(64 << 10, 'n'));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_THAT(std::string(full.message()), HasSubstr("No space left on device"));
  EXPECT_EQ(*ReadFile(path), "old");
  EXPECT_THAT(Listing(fs->path()), ::testing::ElementsAre(".filler", "state.json")) << "no temp file is left";
  ASSERT_TRUE(fs->Free().ok());
  ASSERT_TRUE(WriteFileAtomically(path, std::string(64 << 10, 'n')).ok());
  EXPECT_EQ(ReadFile(path)->size(), 64u << 10);
}

TEST(WriteDirectoryAtomically, ShowsTheWholeFolderOrNothing) {
  const std::string root = TempDir();
  const std::string dir = root + "/ckpt";
  ASSERT_TRUE(WriteDirectoryAtomically(dir, [](const std::string& tmp) {
                return WriteFileAtomically(tmp + "/a", "1");
              }).ok());
  EXPECT_EQ(*ReadFile(dir + "/a"), "1");
  EXPECT_EQ(WriteDirectoryAtomically(dir, [](const std::string&) { return absl::OkStatus(); }).code(),
            absl::StatusCode::kAlreadyExists);
  // A fill that fails leaves neither the folder nor its hidden sibling.
  const absl::Status failed = WriteDirectoryAtomically(root + "/other", [](const std::string& tmp) {
    EXPECT_TRUE(IsTempName(BaseName(tmp))) << tmp;
    EXPECT_TRUE(WriteFileAtomically(tmp + "/a", "1").ok());
    return absl::DataLossError("cut short");
  });
  EXPECT_EQ(failed.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Listing(root), ::testing::ElementsAre("ckpt"));
}

TEST(WriteDirectoryAtomically, AFullDiskFailsWithResourceExhaustedAndLeavesNothingBehind) {
  RLHF_MOUNT_SMALL_FILESYSTEM_OR_SKIP(fs, 256 << 10);
  ASSERT_TRUE(fs->Fill().ok());
  auto fill = [](const std::string& tmp) { return WriteFileAtomically(tmp + "/weights", std::string(64 << 10, 'w')); };
  const absl::Status full = WriteDirectoryAtomically(fs->path() + "/ckpt", fill);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_THAT(Listing(fs->path()), ::testing::ElementsAre(".filler"));
  ASSERT_TRUE(fs->Free().ok());
  ASSERT_TRUE(WriteDirectoryAtomically(fs->path() + "/ckpt", fill).ok());
  EXPECT_EQ(ReadFile(fs->path() + "/ckpt/weights")->size(), 64u << 10);
}

TEST(RemoveTempFiles, RemovesWhatKilledWritersLeftAndNothingElse) {
  const std::string dir = TempDir();
  ASSERT_TRUE(MakeDirectories(dir + "/checkpoints/.tmp-round-1-iter-2-4242/policy").ok());
  ASSERT_TRUE(MakeDirectories(dir + "/checkpoints/round-1-iter-1").ok());
  for (const std::string& name : {"run.json", "run.json.tmp.4242.7", "checkpoints/round-1-iter-1/model.safetensors",
                                  "checkpoints/round-1-iter-1/model.safetensors.tmp.17.0",
                                  "checkpoints/.tmp-round-1-iter-2-4242/policy/config.json", "notes.tmp",
                                  "a.tmp.1", ".tmp-x", "x.tmp.1.y"}) {
    ASSERT_TRUE(WriteFileAtomically(dir + "/" + name, "x").ok()) << name;
  }
  auto removed = RemoveTempFiles(dir);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_THAT(*removed, ::testing::UnorderedElementsAre(dir + "/run.json.tmp.4242.7",
                                                        dir + "/checkpoints/round-1-iter-1/model.safetensors.tmp.17.0",
                                                        dir + "/checkpoints/.tmp-round-1-iter-2-4242"));
  EXPECT_THAT(Listing(dir), ::testing::ElementsAre(".tmp-x", "a.tmp.1", "checkpoints", "notes.tmp", "run.json",
                                                   "x.tmp.1.y"));
  EXPECT_THAT(Listing(dir + "/checkpoints"), ::testing::ElementsAre("round-1-iter-1"));
  EXPECT_THAT(Listing(dir + "/checkpoints/round-1-iter-1"), ::testing::ElementsAre("model.safetensors"));
}

}  // namespace
}  // namespace rlhf::util
