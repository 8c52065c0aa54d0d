#include "common/data/jsonl_appender.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/data/jsonl_writer.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"

namespace rlhf::data {
namespace {

// Reads exactly `size` bytes at `offset`.
absl::Status ReadAt(int fd, const std::string& path, uint64_t offset, size_t size, char* out) {
  while (size > 0) {
    const ssize_t n = ::pread(fd, out, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return util::ErrnoStatus("cannot read", path, errno);
    }
    if (n == 0) return absl::DataLossError(absl::StrCat(path, " shrank while being read"));
    out += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

// The size of the file without a torn last line: just past its last "\n", or 0 when it has none.
absl::StatusOr<uint64_t> CompleteLinesSize(int fd, const std::string& path, uint64_t file_size) {
  constexpr size_t kChunk = 1 << 16;
  std::string buffer(kChunk, '\0');
  uint64_t end = file_size;
  while (end > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, end));
    const uint64_t begin = end - n;
    RETURN_IF_ERROR(ReadAt(fd, path, begin, n, buffer.data()));
    for (size_t i = n; i > 0; --i) {
      if (buffer[i - 1] == '\n') return begin + i;
    }
    end = begin;
  }
  return 0;
}

absl::Status WriteAll(int fd, const std::string& path, absl::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return util::ErrnoStatus("cannot append to", path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status Sync(int fd, const std::string& path) {
  if (::fsync(fd) != 0) return util::ErrnoStatus("cannot fsync", path, errno);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<JsonlAppender>> JsonlAppender::Open(const std::string& path,
                                                                   const JsonlAppenderOptions& options) {
  JsonlRecovery recovery;
  int fd = ::open(path.c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT && options.create_if_missing) {
    fd = ::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    recovery.created = fd >= 0;
  }
  if (fd < 0) return util::ErrnoStatus("cannot open", path, errno);
  // From here on, every return closes fd unless ownership passed to the appender.
  auto fail = [fd](absl::Status status) {
    ::close(fd);
    return status;
  };
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) {
      return fail(absl::FailedPreconditionError(
          absl::StrCat(path, " is already open for appending (locked by another JsonlAppender)")));
    }
    return fail(util::ErrnoStatus("cannot lock", path, err));
  }
  if (recovery.created) {
    if (absl::Status s = util::SyncDirectory(util::DirName(path)); !s.ok()) return fail(s);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) return fail(util::ErrnoStatus("cannot stat", path, errno));
  if (!S_ISREG(st.st_mode)) return fail(absl::FailedPreconditionError(absl::StrCat(path, " is not a regular file")));
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  absl::StatusOr<uint64_t> keep = CompleteLinesSize(fd, path, file_size);
  if (!keep.ok()) return fail(keep.status());
  if (*keep < file_size) {
    if (::ftruncate(fd, static_cast<off_t>(*keep)) != 0) return fail(util::ErrnoStatus("cannot truncate", path, errno));
    if (absl::Status s = Sync(fd, path); !s.ok()) return fail(s);
  }
  recovery.truncated_bytes = file_size - *keep;
  recovery.kept_bytes = *keep;
  return std::unique_ptr<JsonlAppender>(new JsonlAppender(path, fd, options, recovery));
}

JsonlAppender::JsonlAppender(std::string path, int fd, JsonlAppenderOptions options, JsonlRecovery recovery)
    : path_(std::move(path)), options_(options), recovery_(recovery), fd_(fd), size_(recovery.kept_bytes) {}

JsonlAppender::~JsonlAppender() {
  absl::MutexLock lock(&mu_);
  if (fd_ >= 0) ::close(fd_);  // also releases the lock
}

absl::Status JsonlAppender::AppendLine(absl::string_view json_line) {
  if (json_line.find_first_of("\r\n") != absl::string_view::npos) {
    return absl::InvalidArgumentError("a JSONL record must not contain a line break");
  }
  const std::string line = absl::StrCat(json_line, "\n");
  absl::MutexLock lock(&mu_);
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("appender of ", path_, " is closed"));
  if (broken_) {
    return absl::FailedPreconditionError(
        absl::StrCat("appender of ", path_, " stopped after a failed append could not be undone; reopen it"));
  }
  absl::Status status = WriteAll(fd_, path_, line);
  if (status.ok() && options_.sync_each_append) status = Sync(fd_, path_);
  if (!status.ok()) {
    // Cut a partial line away so that the next append starts on a line of its own.
    if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0) broken_ = true;
    return status;
  }
  size_ += line.size();
  return absl::OkStatus();
}

absl::Status JsonlAppender::Append(const SftExample& example) {
  RETURN_IF_ERROR(ValidateSftExample(example));
  return AppendLine(ToJsonLine(example));
}

absl::Status JsonlAppender::Append(const Comparison& comparison) {
  RETURN_IF_ERROR(ValidateComparison(comparison, std::numeric_limits<size_t>::max()));
  return AppendLine(ToJsonLine(comparison));
}

absl::Status JsonlAppender::Append(const PromptRecord& record) {
  RETURN_IF_ERROR(ValidatePromptRecord(record));
  return AppendLine(ToJsonLine(record));
}

absl::Status JsonlAppender::Flush() {
  absl::MutexLock lock(&mu_);
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("appender of ", path_, " is closed"));
  return Sync(fd_, path_);
}

absl::Status JsonlAppender::Close() {
  absl::MutexLock lock(&mu_);
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("appender of ", path_, " is closed"));
  absl::Status status = Sync(fd_, path_);
  if (::close(fd_) != 0 && status.ok()) status = util::ErrnoStatus("cannot close", path_, errno);
  fd_ = -1;
  return status;
}

uint64_t JsonlAppender::size() const {
  absl::MutexLock lock(&mu_);
  return size_;
}

}  // namespace rlhf::data
