#include "common/data/line_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/util/file_util.h"

namespace rlhf::data::internal {
namespace {

constexpr size_t kBufferBytes = 1 << 16;
constexpr absl::string_view kUtf8Bom = "\xEF\xBB\xBF";

}  // namespace

absl::StatusOr<std::unique_ptr<LineReader>> LineReader::Open(const std::string& path, size_t max_line_bytes,
                                                             KeepGoing keep_going) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; the file is refused below anyway.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return util::ErrnoStatus("cannot open", path, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return util::ErrnoStatus("cannot stat", path, err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  return std::unique_ptr<LineReader>(new LineReader(path, fd, max_line_bytes, std::move(keep_going)));
}

LineReader::LineReader(std::string path, int fd, size_t max_line_bytes, KeepGoing keep_going)
    : path_(std::move(path)), fd_(fd), max_line_bytes_(max_line_bytes), keep_going_(std::move(keep_going)) {}

LineReader::~LineReader() { ::close(fd_); }

absl::Status LineReader::Refill() {
  if (keep_going_) {
    if (absl::Status status = keep_going_(); !status.ok()) return status;
  }
  buffer_.resize(kBufferBytes);
  buffer_pos_ = 0;
  while (true) {
    const ssize_t n = ::read(fd_, buffer_.data(), buffer_.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      buffer_.clear();
      return util::ErrnoStatus("cannot read", path_, err);
    }
    buffer_.resize(static_cast<size_t>(n));
    if (n == 0) eof_ = true;
    return absl::OkStatus();
  }
}

absl::StatusOr<bool> LineReader::Next(Line* line) {
  line->text.clear();
  line->too_long = false;
  line->length = 0;
  // Up to one byte more than the limit is kept, so that a trailing "\r" can still be dropped.
  const size_t keep_limit = max_line_bytes_ + 1;
  bool saw_any = false;
  while (true) {
    if (buffer_pos_ == buffer_.size()) {
      if (eof_) break;
      if (absl::Status s = Refill(); !s.ok()) return s;
      if (eof_) break;
    }
    const char* begin = buffer_.data() + buffer_pos_;
    const size_t available = buffer_.size() - buffer_pos_;
    const void* newline = std::memchr(begin, '\n', available);
    const size_t chunk = newline ? static_cast<const char*>(newline) - begin : available;
    saw_any = true;
    line->length += chunk;
    if (!line->too_long) {
      if (line->text.size() + chunk <= keep_limit) {
        line->text.append(begin, chunk);
      } else {
        line->too_long = true;
        line->text.clear();
        line->text.shrink_to_fit();
      }
    }
    buffer_pos_ += chunk;
    if (newline) {
      ++buffer_pos_;  // the "\n"
      break;
    }
  }
  if (!saw_any) return false;  // end of file, and no bytes after the last newline
  ++line_number_;
  line->number = line_number_;
  if (!line->too_long && !line->text.empty() && line->text.back() == '\r') {
    line->text.pop_back();
    --line->length;
  }
  if (line_number_ == 1 && !line->too_long && absl::string_view(line->text).substr(0, 3) == kUtf8Bom) {
    line->text.erase(0, kUtf8Bom.size());
    line->length -= kUtf8Bom.size();
  }
  if (line->length > max_line_bytes_) {
    line->too_long = true;
    line->text.clear();
  }
  return true;
}

}  // namespace rlhf::data::internal
