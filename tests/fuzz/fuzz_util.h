// What the fuzz targets share: scratch files, the data folder, and contract checks that end the run with a report
// the fuzzer keeps (abort with the message), so that a broken contract counts as a finding like a crash does.
#ifndef RLHF_TESTS_FUZZ_FUZZ_UTIL_H_
#define RLHF_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace rlhf::fuzz {

// A directory of its own for this process, on tmpfs (/dev/shm) when there is one: fuzz targets write their input
// to files thousands of times a second, and the code under test fsyncs. Created once, removed at exit.
const std::string& ScratchDir();

// Writes `bytes` to ScratchDir()/name (replacing it) and returns the path. Aborts on I/O errors (the machine's
// fault, not a finding).
std::string WriteScratchFile(const std::string& name, absl::string_view bytes);

// An empty directory ScratchDir()/name (emptied when it exists) and its path.
std::string FreshScratchDir(const std::string& name);

// The folder holding gpt2/encoder.json and gpt2/vocab.bpe: $RLHF_DATA_DIR, else the one the build was configured
// with.
std::string DataDir();

// The source tree (for committed test data): $RLHF_SOURCE_DIR, else the configured one.
std::string SourceDir();

// A finding: prints `what` and the status and aborts.
[[noreturn]] void Fail(absl::string_view what, const absl::Status& status = absl::OkStatus());

// Aborts (Fail) unless `status` is OK or has one of the codes a documented contract allows for bad input.
void ExpectOkOr(const absl::Status& status, absl::string_view what, std::initializer_list<absl::StatusCode> allowed);

// Aborts unless `condition` holds.
inline void Expect(bool condition, absl::string_view what) {
  if (!condition) Fail(what);
}

}  // namespace rlhf::fuzz

#endif  // RLHF_TESTS_FUZZ_FUZZ_UTIL_H_
