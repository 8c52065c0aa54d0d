#include "common/util/path_roots.h"

#include <stdlib.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rlhf::util {
namespace {

using ::testing::HasSubstr;

class PathRootsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = absl::StrCat(::testing::TempDir(), "/rlhf_roots_XXXXXX");
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    char real[PATH_MAX];
    ASSERT_NE(::realpath(pattern.c_str(), real), nullptr);
    base_ = real;
    ASSERT_TRUE(MakeDirectories(base_ + "/root/ckpt").ok());
    ASSERT_TRUE(MakeDirectories(base_ + "/outside").ok());
    ASSERT_TRUE(WriteFileAtomically(base_ + "/root/data.jsonl", "{}\n").ok());
    ASSERT_TRUE(WriteFileAtomically(base_ + "/outside/secret", "top secret\n").ok());
    ASSERT_EQ(::symlink((base_ + "/outside").c_str(), (base_ + "/root/escape").c_str()), 0);
    auto roots = PathRoots::Create({base_ + "/root"}, "--path_roots");
    ASSERT_TRUE(roots.ok()) << roots.status();
    roots_ = *std::move(roots);
  }

  std::string base_;
  PathRoots roots_;
};

TEST_F(PathRootsTest, ResolvesPathsInsideARootAbsoluteOrRelative) {
  auto absolute = roots_.Resolve(base_ + "/root/data.jsonl", "data_path");
  ASSERT_TRUE(absolute.ok()) << absolute.status();
  EXPECT_EQ(*absolute, base_ + "/root/data.jsonl");
  auto relative = roots_.Resolve("ckpt/../data.jsonl", "data_path");
  ASSERT_TRUE(relative.ok()) << relative.status();
  EXPECT_EQ(*relative, base_ + "/root/data.jsonl");
}

TEST_F(PathRootsTest, RefusesPathsThatLeaveTheRootsByDotDotOrSymlink) {
  for (const std::string& path : {base_ + "/outside/secret", std::string("../outside/secret"),
                                  std::string("escape/secret"), base_ + "/root/../outside/secret"}) {
    auto resolved = roots_.Resolve(path, "data_path");
    ASSERT_FALSE(resolved.ok()) << path;
    EXPECT_EQ(resolved.status().code(), absl::StatusCode::kPermissionDenied) << path;
    EXPECT_THAT(resolved.status().message(), HasSubstr("data_path"));
    EXPECT_THAT(resolved.status().message(), HasSubstr("--path_roots"));
    EXPECT_THAT(resolved.status().message(), ::testing::Not(HasSubstr("top secret")));
  }
}

TEST_F(PathRootsTest, MissingPathsInsideAreNotFoundAndOutsideAreRefused) {
  EXPECT_EQ(roots_.Resolve("nope.jsonl", "data_path").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(roots_.Resolve(base_ + "/outside/nope", "data_path").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(roots_.Resolve("escape/nope", "data_path").status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(PathRootsTest, WritesMayCreateFoldersOnlyUnderARoot) {
  auto fresh = roots_.ResolveForWrite("ckpt/sft-1/step-3", "output_dir");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(*fresh, base_ + "/root/ckpt/sft-1/step-3");
  EXPECT_EQ(roots_.ResolveForWrite("../../x", "path").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(roots_.ResolveForWrite("escape/new", "path").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(roots_.ResolveForWrite("/x", "path").status().code(), absl::StatusCode::kPermissionDenied);
  auto dots = roots_.ResolveForWrite("ckpt/new/../../../x", "path");
  EXPECT_FALSE(dots.ok());
}

TEST_F(PathRootsTest, BadInputAndNoRootsAreRefusedWithTheFieldNamed) {
  EXPECT_EQ(roots_.Resolve("", "checkpoint_path").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(roots_.Resolve(std::string("a\0b", 3), "checkpoint_path").status().code(),
            absl::StatusCode::kInvalidArgument);
  PathRoots none;
  auto refused = none.Resolve(base_ + "/root/data.jsonl", "checkpoint_path");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(refused.status().message(), HasSubstr("checkpoint_path"));
  EXPECT_EQ(PathRoots::Create({base_ + "/missing"}, "--path_roots").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(PathRoots::Create({base_ + "/root/data.jsonl"}, "--path_roots").status().code(),
            absl::StatusCode::kInvalidArgument);
  auto listed = PathRoots::FromList(absl::StrCat(base_, "/root, ", base_, "/outside"), "--path_roots");
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->roots().size(), 2u);
}

}  // namespace
}  // namespace rlhf::util
