// A small tmpfs for tests of what the suite does when its disk fills up: mount one, fill it to the last page, free
// it again. Mounting needs CAP_SYS_ADMIN (root, or a user namespace); where the machine refuses, Mount says why and
// the test skips (RLHF_MOUNT_SMALL_FILESYSTEM_OR_SKIP).
#ifndef RLHF_TESTS_TESTING_SMALL_FILESYSTEM_H_
#define RLHF_TESTS_TESTING_SMALL_FILESYSTEM_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace rlhf::testing {

class SmallFilesystem {
 public:
  // Mounts a tmpfs of `bytes` (rounded up to whole pages by the kernel) on a fresh folder under the test's temp dir.
  // Unavailable, with the reason, where mounting is not allowed.
  static absl::StatusOr<std::unique_ptr<SmallFilesystem>> Mount(int64_t bytes);
  // Unmounts (lazily: processes that still hold files there keep them until they close them) and removes the folder.
  ~SmallFilesystem();
  SmallFilesystem(const SmallFilesystem&) = delete;
  SmallFilesystem& operator=(const SmallFilesystem&) = delete;

  // The mount point.
  const std::string& path() const { return path_; }

  // Writes a filler file until the file system answers ENOSPC, so that no whole page is left (a file's last,
  // partly used page may still take a few bytes). Returns the bytes written. Call Free to remove it.
  absl::StatusOr<int64_t> Fill();
  // Removes the filler file.
  absl::Status Free();

  // Bytes free for an unprivileged writer (statvfs).
  int64_t AvailableBytes() const;

 private:
  explicit SmallFilesystem(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace rlhf::testing

// Declares `std::unique_ptr<SmallFilesystem> var` mounted with `bytes`, or skips the test saying why it cannot.
#define RLHF_MOUNT_SMALL_FILESYSTEM_OR_SKIP(var, bytes)                                                         \
  auto var##_or = ::rlhf::testing::SmallFilesystem::Mount(bytes);                                              \
  if (!var##_or.ok()) {                                                                                        \
    GTEST_SKIP() << "needs a small tmpfs to fill up, and this machine does not allow mounting one ("          \
                 << var##_or.status().message() << "); run as root (or with CAP_SYS_ADMIN) to cover disk-full"; \
  }                                                                                                            \
  std::unique_ptr<::rlhf::testing::SmallFilesystem> var = *std::move(var##_or)

#endif  // RLHF_TESTS_TESTING_SMALL_FILESYSTEM_H_
