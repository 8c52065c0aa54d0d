#include "tests/testing/small_filesystem.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace rlhf::testing {
namespace {

constexpr char kFiller[] = "/.filler";

}  // namespace

absl::StatusOr<std::unique_ptr<SmallFilesystem>> SmallFilesystem::Mount(int64_t bytes) {
  std::string pattern = ::testing::TempDir() + "small_fs_XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", pattern, ": ", std::strerror(errno)));
  }
  const std::string options = absl::StrCat("size=", bytes, ",mode=0755");
  if (::mount("tmpfs", pattern.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
    const int err = errno;
    ::rmdir(pattern.c_str());
    return absl::UnavailableError(absl::StrCat("mount -t tmpfs -o ", options, ": ", std::strerror(err)));
  }
  return std::unique_ptr<SmallFilesystem>(new SmallFilesystem(pattern));
}

SmallFilesystem::~SmallFilesystem() {
  if (::umount2(path_.c_str(), MNT_DETACH) != 0) {
    ADD_FAILURE() << "umount " << path_ << ": " << std::strerror(errno);
    return;
  }
  ::rmdir(path_.c_str());
}

absl::StatusOr<int64_t> SmallFilesystem::Fill() {
  const std::string filler = path_ + kFiller;
  const int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", filler, ": ", std::strerror(errno)));
  const std::string block(4096, 'x');
  int64_t written = 0;
  while (true) {
    const ssize_t n = ::write(fd, block.data(), block.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      if (err != ENOSPC) return absl::InternalError(absl::StrCat("write ", filler, ": ", std::strerror(err)));
      return written;
    }
    written += n;
  }
}

absl::Status SmallFilesystem::Free() {
  const std::string filler = path_ + kFiller;
  if (::unlink(filler.c_str()) != 0) return absl::InternalError(absl::StrCat("unlink ", filler, ": ", std::strerror(errno)));
  return absl::OkStatus();
}

int64_t SmallFilesystem::AvailableBytes() const {
  struct statvfs st;
  if (::statvfs(path_.c_str(), &st) != 0) return -1;
  return static_cast<int64_t>(st.f_bavail) * static_cast<int64_t>(st.f_frsize);
}

}  // namespace rlhf::testing
