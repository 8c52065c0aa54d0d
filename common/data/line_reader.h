// Reads a text file line by line with bounded memory. Internal to common/data.
#ifndef RLHF_COMMON_DATA_LINE_READER_H_
#define RLHF_COMMON_DATA_LINE_READER_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace rlhf::data::internal {

// One line of a file, without its "\n" and without a "\r" just before it (CRLF files read like LF files). A UTF-8 byte
// order mark at the start of the file is dropped from line 1. The last line counts even without a trailing newline.
struct Line {
  size_t number = 0;  // 1-based
  // The bytes of the line; empty when `too_long`.
  std::string text;
  // The line had more than max_line_bytes bytes (after dropping "\r"); its bytes were skipped, not stored.
  bool too_long = false;
  size_t length = 0;  // bytes in the line (as for `text`), also when too_long
};

// Not thread-safe. Memory use is bounded by max_line_bytes plus a 64 KiB buffer, whatever the file holds; time by
// the file's size, since only regular files are read (a device such as /dev/zero never ends).
class LineReader {
 public:
  // Called before each read of the file (every 64 KiB); a non-OK status ends the read with it (e.g. CANCELLED
  // when the operation that reads is cancelled or the process shuts down).
  using KeepGoing = std::function<absl::Status()>;

  // NotFound / PermissionDenied / Internal naming the path when the file cannot be opened; InvalidArgument when it
  // is not a regular file (a directory, device or pipe).
  static absl::StatusOr<std::unique_ptr<LineReader>> Open(const std::string& path, size_t max_line_bytes,
                                                          KeepGoing keep_going = nullptr);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Fills `line` with the next line and returns true, or returns false at the end of the file. An error when the
  // file cannot be read.
  absl::StatusOr<bool> Next(Line* line);

 private:
  LineReader(std::string path, int fd, size_t max_line_bytes, KeepGoing keep_going);
  absl::Status Refill();  // reads more bytes into buffer_; leaves it empty at end of file

  const std::string path_;
  const int fd_;
  const size_t max_line_bytes_;
  const KeepGoing keep_going_;
  std::string buffer_;
  size_t buffer_pos_ = 0;
  bool eof_ = false;
  size_t line_number_ = 0;
};

}  // namespace rlhf::data::internal

#endif  // RLHF_COMMON_DATA_LINE_READER_H_
