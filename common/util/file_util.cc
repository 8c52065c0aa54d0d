#include "common/util/file_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace rlhf::util {

absl::Status ErrnoStatus(absl::string_view what, const std::string& path, int err) {
  std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(message);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(message);
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(message);
  if (err == EWOULDBLOCK || err == EISDIR) return absl::FailedPreconditionError(message);
  return absl::InternalError(message);
}

std::string DirName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string BaseName(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool IsEmptyOrMissingDirectory(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return errno == ENOENT;
  if (!S_ISDIR(st.st_mode)) return false;
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return false;
  bool empty = true;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") {
      empty = false;
      break;
    }
  }
  ::closedir(dir);
  return empty;
}

absl::Status RemoveFile(const std::string& path) {
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoStatus("cannot remove", path, errno);
  }
  return SyncDirectory(DirName(path));
}

absl::Status CopyFileAtomically(const std::string& from, const std::string& to) {
  absl::StatusOr<std::string> bytes = ReadFile(from);
  if (!bytes.ok()) return bytes.status();
  return WriteFileAtomically(to, *bytes);
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open", path, errno);
  std::string contents;
  char buffer[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return ErrnoStatus("cannot read", path, err);
    }
    if (n == 0) break;
    contents.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return contents;
}

absl::Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open directory", dir, errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoStatus("cannot fsync directory", dir, err);
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents) {
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("cannot create", tmp, errno);
  const char* data = contents.data();
  size_t left = contents.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, data, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return ErrnoStatus("cannot write", tmp, err);
    }
    data += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return ErrnoStatus("cannot fsync", tmp, err);
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoStatus("cannot close", tmp, err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoStatus("cannot rename onto", path, err);
  }
  return SyncDirectory(DirName(path));
}

absl::Status WriteDirectoryAtomically(const std::string& dir,
                                      const std::function<absl::Status(const std::string& tmp)>& fill) {
  std::string clean = dir;
  while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
  if (PathExists(clean)) return absl::AlreadyExistsError(absl::StrCat("directory ", clean, " already exists"));
  const std::string parent = DirName(clean);
  if (absl::Status s = MakeDirectories(parent); !s.ok()) return s;
  const std::string tmp = absl::StrCat(parent, "/.tmp-", BaseName(clean), "-", ::getpid());
  std::error_code ignored;
  std::filesystem::remove_all(tmp, ignored);  // left by an earlier attempt of this process
  if (absl::Status s = MakeDirectories(tmp); !s.ok()) return s;
  absl::Status filled = fill(tmp);
  if (filled.ok()) filled = SyncDirectory(tmp);
  if (filled.ok() && ::rename(tmp.c_str(), clean.c_str()) != 0) filled = ErrnoStatus("cannot rename onto", clean, errno);
  if (!filled.ok()) {
    std::filesystem::remove_all(tmp, ignored);
    return filled;
  }
  return SyncDirectory(parent);
}

namespace {

bool AllDigits(absl::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
}

}  // namespace

bool IsTempName(absl::string_view name) {
  // "<file>.tmp.<pid>.<n>"
  const size_t tmp = name.rfind(".tmp.");
  if (tmp != absl::string_view::npos && tmp > 0) {
    absl::string_view rest = name.substr(tmp + 5);
    const size_t dot = rest.find('.');
    if (dot != absl::string_view::npos && AllDigits(rest.substr(0, dot)) && AllDigits(rest.substr(dot + 1))) {
      return true;
    }
  }
  // ".tmp-<folder>-<pid>"
  if (absl::StartsWith(name, ".tmp-")) {
    const size_t dash = name.rfind('-');
    return dash > 5 && AllDigits(name.substr(dash + 1));
  }
  return false;
}

absl::StatusOr<std::vector<std::string>> RemoveTempFiles(const std::string& dir) {
  std::vector<std::string> found;
  std::error_code error;
  std::filesystem::recursive_directory_iterator it(dir, error), end;
  if (error) return ErrnoStatus("cannot list", dir, error.value());
  for (; it != end; it.increment(error)) {
    if (error) return ErrnoStatus("cannot list", dir, error.value());
    if (!IsTempName(it->path().filename().string())) continue;
    found.push_back(it->path().string());
    if (it->is_directory(error)) it.disable_recursion_pending();
  }
  for (const std::string& path : found) {
    std::filesystem::remove_all(path, error);
    if (error) return ErrnoStatus("cannot remove", path, error.value());
  }
  return found;
}

absl::Status MakeDirectories(const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("empty directory path");
  std::string partial;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    partial = dir.substr(0, pos);
    if (partial.empty()) continue;
    if (::mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoStatus("cannot create directory", partial, errno);
    }
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(dir, " exists and is not a directory"));
  }
  return absl::OkStatus();
}

}  // namespace rlhf::util
