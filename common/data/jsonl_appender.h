// A durable, append-only JSON Lines file, for records a run collects one at a time (comparisons from labelers).
#ifndef RLHF_COMMON_DATA_JSONL_APPENDER_H_
#define RLHF_COMMON_DATA_JSONL_APPENDER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/data/records.h"

namespace rlhf::data {

struct JsonlAppenderOptions {
  // fsync after every Append, so that a record whose Append returned OK survives power loss. When false a record
  // reaches the kernel on Append (it survives a crash of this process) and the disk on Flush or Close.
  bool sync_each_append = true;
  // Create the file when it is missing (and fsync its folder); when false a missing file is NotFound.
  bool create_if_missing = true;
};

// What Open found and repaired.
struct JsonlRecovery {
  bool created = false;  // the file did not exist
  // A crash in the middle of an Append leaves a last line without its "\n": those bytes were cut away (and the cut
  // fsync'd), so the file ends with a complete line again. 0 when the file was whole.
  uint64_t truncated_bytes = 0;
  uint64_t kept_bytes = 0;  // file size after recovery
};

// Appends whole lines to one file. Each Append writes "line\n" at the end of the file in one go; if the write fails
// part-way the file is cut back to its previous size, and if even that fails the appender refuses further appends
// (FailedPrecondition) rather than write after a torn line. A torn line left by a crash is removed by the next
// Open. An exclusive advisory lock (flock) keeps a second appender, in this process or another, off the same file.
// Thread-safe: appends from several threads are serialised.
class JsonlAppender {
 public:
  // Opens `path` for appending and repairs a torn last line (see JsonlRecovery). FailedPrecondition when another
  // appender holds the file; file system errors name the path.
  static absl::StatusOr<std::unique_ptr<JsonlAppender>> Open(const std::string& path,
                                                             const JsonlAppenderOptions& options = {});

  // Closes the file without fsync (records appended without sync may still be in the page cache, which survives a
  // crash of the process but not of the machine). Call Close to sync and see errors.
  ~JsonlAppender();
  JsonlAppender(const JsonlAppender&) = delete;
  JsonlAppender& operator=(const JsonlAppender&) = delete;

  // Appends `json_line` and a "\n". InvalidArgument when it contains "\n" or "\r" (one record, one line); the
  // content is otherwise not checked.
  absl::Status AppendLine(absl::string_view json_line);
  // Validates the record like the writers do (jsonl_writer.h) and appends ToJsonLine(record).
  absl::Status Append(const SftExample& example);
  absl::Status Append(const Comparison& comparison);
  absl::Status Append(const PromptRecord& record);

  // fsyncs the file.
  absl::Status Flush();
  // fsyncs, closes and releases the lock; every later call (Close too) fails with FailedPrecondition.
  absl::Status Close();

  const JsonlRecovery& recovery() const { return recovery_; }
  const std::string& path() const { return path_; }
  // Bytes in the file: recovery().kept_bytes plus everything appended since.
  uint64_t size() const;

 private:
  JsonlAppender(std::string path, int fd, JsonlAppenderOptions options, JsonlRecovery recovery);

  const std::string path_;
  const JsonlAppenderOptions options_;
  const JsonlRecovery recovery_;
  mutable absl::Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_);  // -1 once closed
  uint64_t size_ ABSL_GUARDED_BY(mu_);
  bool broken_ ABSL_GUARDED_BY(mu_) = false;  // a failed append could not be undone
};

}  // namespace rlhf::data

#endif  // RLHF_COMMON_DATA_JSONL_APPENDER_H_
