#include "common/util/path_roots.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/util/file_util.h"

namespace rlhf::util {
namespace {

// realpath(3); NotFound when the path (or a folder on it) does not exist.
absl::StatusOr<std::string> RealPath(const std::string& path, absl::string_view field) {
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) == nullptr) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat(field, ": ", path, " does not exist"));
    }
    return ErrnoStatus(absl::StrCat(field, ": cannot resolve"), path, err);
  }
  return std::string(resolved);
}

}  // namespace

absl::StatusOr<PathRoots> PathRoots::Create(const std::vector<std::string>& roots, absl::string_view flag) {
  std::vector<std::string> resolved;
  for (const std::string& root : roots) {
    if (root.empty()) continue;
    if (root.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": a folder name contains a NUL byte"));
    }
    absl::StatusOr<std::string> real = RealPath(root, flag);
    if (!real.ok()) return real.status();
    struct stat st;
    if (::stat(real->c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": ", root, " is not a folder"));
    }
    resolved.push_back(*std::move(real));
  }
  return PathRoots(std::move(resolved), std::string(flag));
}

absl::StatusOr<PathRoots> PathRoots::FromList(absl::string_view comma_separated, absl::string_view flag) {
  std::vector<std::string> roots;
  for (absl::string_view part : absl::StrSplit(comma_separated, ',', absl::SkipWhitespace())) {
    roots.emplace_back(absl::StripAsciiWhitespace(part));
  }
  return Create(roots, flag);
}

bool PathRoots::Inside(const std::string& resolved) const {
  for (const std::string& root : roots_) {
    if (resolved == root) return true;
    const std::string prefix = root == "/" ? root : root + "/";
    if (resolved.compare(0, prefix.size(), prefix) == 0) return true;
  }
  return false;
}

absl::Status PathRoots::Outside(absl::string_view path, absl::string_view field) const {
  if (roots_.empty()) {
    return absl::PermissionDeniedError(absl::StrCat(field, ": ", path, " cannot be used: this server lets requests "
                                                    "name no paths (start it with ", flag_, ")"));
  }
  return absl::PermissionDeniedError(absl::StrCat(field, ": ", path, " is outside the folders this server allows (",
                                                  flag_, ": ", absl::StrJoin(roots_, ", "), ")"));
}

absl::StatusOr<std::string> PathRoots::Absolute(absl::string_view path, absl::string_view field) const {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
  if (path.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(field, " contains a NUL byte"));
  }
  if (path.size() >= PATH_MAX) return absl::InvalidArgumentError(absl::StrCat(field, " is too long"));
  if (path.front() == '/') return std::string(path);
  if (roots_.empty()) return Outside(path, field);
  return absl::StrCat(roots_.front(), "/", path);
}

absl::StatusOr<std::string> PathRoots::Resolve(absl::string_view path, absl::string_view field) const {
  absl::StatusOr<std::string> absolute = Absolute(path, field);
  if (!absolute.ok()) return absolute.status();
  if (roots_.empty()) return Outside(path, field);
  absl::StatusOr<std::string> real = RealPath(*absolute, field);
  if (!real.ok()) {
    // A missing path outside the roots is refused as outside: callers learn nothing of what exists there.
    if (absl::IsNotFound(real.status())) {
      absl::StatusOr<std::string> prefix = ResolveForWrite(path, field);
      if (!prefix.ok() && absl::IsPermissionDenied(prefix.status())) return prefix.status();
    }
    return real.status();
  }
  if (!Inside(*real)) return Outside(path, field);
  return real;
}

absl::StatusOr<std::string> PathRoots::ResolveForWrite(absl::string_view path, absl::string_view field) const {
  absl::StatusOr<std::string> absolute = Absolute(path, field);
  if (!absolute.ok()) return absolute.status();
  if (roots_.empty()) return Outside(path, field);
  // Split into the longest existing prefix and the names still to create.
  std::vector<std::string> missing;
  std::string existing = *absolute;
  while (true) {
    while (existing.size() > 1 && existing.back() == '/') existing.pop_back();
    struct stat st;
    if (::lstat(existing.c_str(), &st) == 0) break;
    if (errno != ENOENT) return ErrnoStatus(absl::StrCat(field, ": cannot inspect"), existing, errno);
    const size_t slash = existing.find_last_of('/');
    if (slash == std::string::npos) return Outside(path, field);
    missing.push_back(existing.substr(slash + 1));
    existing = slash == 0 ? std::string("/") : existing.substr(0, slash);
  }
  for (const std::string& name : missing) {
    if (name.empty() || name == "." || name == "..") {
      return absl::InvalidArgumentError(absl::StrCat(field, ": ", path, " has a '", name, "' component"));
    }
  }
  absl::StatusOr<std::string> real = RealPath(existing, field);
  if (!real.ok()) return real.status();
  if (!Inside(*real)) return Outside(path, field);
  std::string out = *real;
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) absl::StrAppend(&out, out == "/" ? "" : "/", *it);
  return out;
}

}  // namespace rlhf::util
