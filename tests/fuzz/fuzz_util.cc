#include "tests/fuzz/fuzz_util.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"

namespace rlhf::fuzz {
namespace {

// Protobuf logs every string field with invalid UTF-8 it refuses to parse; fuzz inputs hold many.
[[maybe_unused]] const bool kQuietProtobuf = [] {
  google::protobuf::SetLogHandler(nullptr);
  return true;
}();

std::string MakeScratchDir() {
  std::string base = "/dev/shm";
  struct stat st;
  if (::stat(base.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || ::access(base.c_str(), W_OK) != 0) {
    const char* tmp = std::getenv("TMPDIR");
    base = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  }
  std::string pattern = base + "/rlhf_fuzz_XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) Fail(absl::StrCat("mkdtemp ", pattern));
  return pattern;
}

}  // namespace

const std::string& ScratchDir() {
  static const std::string* dir = [] {
    auto* d = new std::string(MakeScratchDir());
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(ScratchDir(), ignored);
    });
    return d;
  }();
  return *dir;
}

std::string WriteScratchFile(const std::string& name, absl::string_view bytes) {
  const std::string path = ScratchDir() + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) Fail(absl::StrCat("cannot write ", path));
  return path;
}

std::string FreshScratchDir(const std::string& name) {
  const std::string path = ScratchDir() + "/" + name;
  std::error_code error;
  std::filesystem::remove_all(path, error);
  std::filesystem::create_directories(path, error);
  if (error) Fail(absl::StrCat("cannot create ", path, ": ", error.message()));
  return path;
}

std::string DataDir() {
  const char* env = std::getenv("RLHF_DATA_DIR");
  return env != nullptr && *env != '\0' ? env : RLHF_FUZZ_DEFAULT_DATA_DIR;
}

std::string SourceDir() {
  const char* env = std::getenv("RLHF_SOURCE_DIR");
  return env != nullptr && *env != '\0' ? env : RLHF_FUZZ_DEFAULT_SOURCE_DIR;
}

void Fail(absl::string_view what, const absl::Status& status) {
  std::fprintf(stderr, "fuzz finding: %.*s%s%s\n", static_cast<int>(what.size()), what.data(), status.ok() ? "" : ": ",
               status.ok() ? "" : status.ToString().c_str());
  std::fflush(stderr);
  std::abort();
}

void ExpectOkOr(const absl::Status& status, absl::string_view what, std::initializer_list<absl::StatusCode> allowed) {
  if (status.ok()) return;
  for (absl::StatusCode code : allowed) {
    if (status.code() == code) return;
  }
  Fail(absl::StrCat(what, " returned an error code its contract does not allow"), status);
}

}  // namespace rlhf::fuzz
