// Input: the bytes of a dataset file (common/data/jsonl_reader.h). Every reader runs on it: SFT demonstrations,
// comparisons, prompts, and pretraining text as .jsonl and as .txt, each with both bad-record policies and with a
// short line limit. A reader accepts the file or refuses it with InvalidArgument; what it accepts passes the record
// checks, its counts add up, and the writers' form of the accepted records reads back to the same records.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/data/jsonl_reader.h"
#include "common/data/jsonl_writer.h"
#include "common/data/records.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using namespace rlhf::data;  // NOLINT: the records and readers of one folder
using rlhf::fuzz::Expect;
using rlhf::fuzz::ExpectOkOr;
using rlhf::fuzz::Fail;

absl::Status Validate(const SftExample& r, const ReadOptions&) { return ValidateSftExample(r); }
absl::Status Validate(const Comparison& r, const ReadOptions& o) {
  return ValidateComparison(r, o.max_responses_per_comparison);
}
absl::Status Validate(const PromptRecord& r, const ReadOptions&) { return ValidatePromptRecord(r); }
absl::Status Validate(const PretrainingText& r, const ReadOptions&) { return ValidatePretrainingText(r); }

// Checks one read; returns the records it accepted (empty when it failed).
template <typename Record, typename Reader>
std::vector<Record> CheckRead(Reader reader, const std::string& path, const ReadOptions& options, bool jsonl,
                              const std::string& what) {
  auto result = reader(path, options);
  if (!result.ok()) {
    ExpectOkOr(result.status(), what, {absl::StatusCode::kInvalidArgument});
    Expect(options.policy == BadRecordPolicy::kFail, what + ": the skip policy failed the read");
    return {};
  }
  for (const Record& record : result->records) {
    if (absl::Status s = Validate(record, options); !s.ok()) Fail(what + " returned a record that fails its check", s);
  }
  Expect(result->errors.size() == std::min(result->num_bad_records, options.max_reported_errors),
         what + ": errors listed do not match the count of bad records");
  if (options.policy == BadRecordPolicy::kFail)
    Expect(result->num_bad_records == 0, what + ": bad records under kFail");
  if (jsonl) {
    Expect(result->num_lines == result->num_blank_lines + result->records.size() + result->num_bad_records,
           what + ": lines do not add up to blank + records + bad records");
  }
  return result->records;
}

// Writes `records` in the writers' form (one ToJsonLine a line) and reads them back with the same reader.
template <typename Record, typename Reader>
void CheckRoundTrip(Reader reader, const std::vector<Record>& records, const ReadOptions& options,
                    const std::string& what) {
  if (records.empty()) return;
  std::string text;
  for (const Record& r : records) absl::StrAppend(&text, ToJsonLine(r), "\n");
  const std::string path = rlhf::fuzz::WriteScratchFile("written.jsonl", text);
  ReadOptions strict = options;
  strict.policy = BadRecordPolicy::kFail;
  auto again = reader(path, strict);
  if (!again.ok()) Fail(what + ": the written form of accepted records does not read back", again.status());
  Expect(again->records == records, what + ": the written form reads back to other records");
}

template <typename Record, typename Reader>
void CheckReader(Reader reader, const std::string& path, bool jsonl, const std::string& what) {
  for (BadRecordPolicy policy : {BadRecordPolicy::kSkip, BadRecordPolicy::kFail}) {
    for (size_t max_line_bytes : {size_t{1} << 20, size_t{40}}) {
      ReadOptions options;
      options.policy = policy;
      options.max_line_bytes = max_line_bytes;
      options.max_reported_errors = 3;
      const std::string label = absl::StrCat(what, " (policy ", policy == BadRecordPolicy::kSkip ? "skip" : "fail",
                                             ", max_line_bytes ", max_line_bytes, ")");
      std::vector<Record> records = CheckRead<Record>(reader, path, options, jsonl, label);
      if (jsonl && max_line_bytes > 40) CheckRoundTrip(reader, records, options, label);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const std::string jsonl = rlhf::fuzz::WriteScratchFile("input.jsonl", bytes);
  const std::string txt = rlhf::fuzz::WriteScratchFile("input.txt", bytes);
  CheckReader<SftExample>(ReadSftExamples, jsonl, true, "ReadSftExamples");
  CheckReader<Comparison>(ReadComparisons, jsonl, true, "ReadComparisons");
  CheckReader<PromptRecord>(ReadPrompts, jsonl, true, "ReadPrompts");
  CheckReader<PretrainingText>(ReadPretrainingTexts, jsonl, true, "ReadPretrainingTexts(.jsonl)");
  CheckReader<PretrainingText>(ReadPretrainingTexts, txt, false, "ReadPretrainingTexts(.txt)");
  return 0;
}
