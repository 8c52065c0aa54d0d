// Whole-file I/O with durable, atomic replacement.
#ifndef RLHF_COMMON_UTIL_FILE_UTIL_H_
#define RLHF_COMMON_UTIL_FILE_UTIL_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rlhf::util {

// Reads a whole file. NotFound when it does not exist; the message names the path and the OS error.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Replaces `path` with `contents` atomically: writes `path.tmp.<pid>.<n>`, fsyncs it, renames it over `path` and
// fsyncs the folder, so a reader sees either the old file or the whole new one, also after a crash.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

// Writes a folder atomically: `fill` writes into a hidden sibling (".tmp-<name>-<pid>"), which is synced and renamed
// to `dir` when `fill` succeeds, so readers (and a resumed run) see the whole folder or none of it. `dir` must not
// exist (AlreadyExists). When `fill` or the rename fails, the hidden sibling is removed and the error returned (a
// full disk is ResourceExhausted). A process killed meanwhile leaves the sibling, which RemoveTempFiles clears.
absl::Status WriteDirectoryAtomically(const std::string& dir,
                                      const std::function<absl::Status(const std::string& tmp)>& fill);

// Whether `name`, one path component, is the temporary name of WriteFileAtomically ("<file>.tmp.<pid>.<n>") or of
// WriteDirectoryAtomically (".tmp-<folder>-<pid>").
bool IsTempName(absl::string_view name);

// Removes, in `dir` and its subfolders, the temporary files and folders that WriteFileAtomically and
// WriteDirectoryAtomically leave when their process is killed mid-write. Only for a folder nothing is writing to at
// the time (a live writer's temporary file would go too). Returns the paths it removed.
absl::StatusOr<std::vector<std::string>> RemoveTempFiles(const std::string& dir);

// fsyncs a directory so that renames inside it are durable.
absl::Status SyncDirectory(const std::string& dir);

// A status for a failed system call on `path` ("<what> <path>: <strerror>"), with the code errno implies: NotFound
// (ENOENT), PermissionDenied (EACCES, EPERM), ResourceExhausted (ENOSPC, EDQUOT), FailedPrecondition (EWOULDBLOCK, EISDIR,
// e.g. a lock held elsewhere), Internal otherwise.
absl::Status ErrnoStatus(absl::string_view what, const std::string& path, int err);

// The folder part of `path` ("." when there is none).
std::string DirName(const std::string& path);

// The last component of `path`, trailing slashes ignored ("runs/a/" -> "a").
std::string BaseName(const std::string& path);

// Creates `dir` and its parents (like `mkdir -p`).
absl::Status MakeDirectories(const std::string& dir);

// Whether something exists at `path` / whether it is a directory (following links).
bool PathExists(const std::string& path);
bool IsDirectory(const std::string& path);
// True when nothing is at `path`, or it is a folder with no entries.
bool IsEmptyOrMissingDirectory(const std::string& path);

// Removes the file at `path`, then syncs its folder; OK when nothing is there.
absl::Status RemoveFile(const std::string& path);

// ReadFile(from), then WriteFileAtomically(to).
absl::Status CopyFileAtomically(const std::string& from, const std::string& to);

}  // namespace rlhf::util

#endif  // RLHF_COMMON_UTIL_FILE_UTIL_H_
