// Confinement of the paths callers send: every file or folder a request names (a checkpoint to load or write, a
// data file, a run folder) must resolve, symlinks included, inside one of the folders the operator configured.
#ifndef RLHF_COMMON_UTIL_PATH_ROOTS_H_
#define RLHF_COMMON_UTIL_PATH_ROOTS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rlhf::util {

// The folders a service lets callers name paths in. Immutable; thread-safe.
class PathRoots {
 public:
  // No roots: every path is refused.
  PathRoots() = default;

  // Resolves each root (it must exist and be a folder). `flag` names the setting in errors ("--path_roots").
  static absl::StatusOr<PathRoots> Create(const std::vector<std::string>& roots, absl::string_view flag);
  // The same from a comma-separated list ("" gives no roots).
  static absl::StatusOr<PathRoots> FromList(absl::string_view comma_separated, absl::string_view flag);

  // The real path of an existing `path` when it lies inside a root. A relative path is taken relative to the first
  // root (not the process's working folder). Errors name `field` (the request field, e.g. "checkpoint_path"):
  // InvalidArgument for an empty path or one with a NUL byte, NotFound when it does not exist, PermissionDenied
  // when it resolves outside every root (naming the roots, never the file's contents).
  absl::StatusOr<std::string> Resolve(absl::string_view path, absl::string_view field) const;

  // For a path that may not exist yet (a folder or file to create): the longest existing prefix must resolve
  // inside a root, and the rest must be plain names (no "." or ".." components). Returns the path with that prefix
  // resolved. Errors as Resolve's.
  absl::StatusOr<std::string> ResolveForWrite(absl::string_view path, absl::string_view field) const;

  // Resolved roots, in the order given.
  const std::vector<std::string>& roots() const { return roots_; }
  bool empty() const { return roots_.empty(); }

 private:
  explicit PathRoots(std::vector<std::string> roots, std::string flag)
      : roots_(std::move(roots)), flag_(std::move(flag)) {}
  bool Inside(const std::string& resolved) const;
  absl::Status Outside(absl::string_view path, absl::string_view field) const;
  absl::StatusOr<std::string> Absolute(absl::string_view path, absl::string_view field) const;

  std::vector<std::string> roots_;
  std::string flag_;
};

}  // namespace rlhf::util

#endif  // RLHF_COMMON_UTIL_PATH_ROOTS_H_
