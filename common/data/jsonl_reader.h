// Readers of the JSON Lines datasets (records.h describes the records and their checks).
//
// Every reader streams the file (memory: the records plus one line) and applies the same line rules:
//   - one JSON object a line; keys other than the record's own are ignored (room for "id", "meta", ...);
//   - blank lines (nothing but spaces and tabs) are skipped silently and counted;
//   - "\r\n" line ends are accepted, and so is a UTF-8 byte order mark at the start of the file;
//   - a line must be well-formed UTF-8 and at most ReadOptions::max_line_bytes long;
//   - a bad record is reported as `path:line: message` (line 1-based) and, by ReadOptions::policy, either skipped
//     (listed in the result) or the end of the read (InvalidArgument with that text).
// A file that cannot be opened or read gives the file system's error (NotFound, PermissionDenied, ...), whatever
// the policy.
#ifndef RLHF_COMMON_DATA_JSONL_READER_H_
#define RLHF_COMMON_DATA_JSONL_READER_H_

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/data/records.h"

namespace rlhf::data {

enum class BadRecordPolicy {
  kFail,  // the first bad record fails the read with InvalidArgument "path:line: message"
  kSkip,  // bad records are skipped and reported in the result
};

struct ReadOptions {
  // Failing is the default: a run should not train on a silently shrunken dataset unless it asked to.
  BadRecordPolicy policy = BadRecordPolicy::kFail;
  // kSkip: how many RecordErrors the result lists (the first ones in the file); the rest are only counted.
  size_t max_reported_errors = 100;
  // Longest accepted line in bytes, without its line end; longer lines are bad records (and never held in memory).
  // For plain-text pretraining files it bounds each line of a document. Must be > 0.
  size_t max_line_bytes = size_t{1} << 20;
  // Largest K of a comparison (ReadComparisons). Must be >= kMinResponsesPerComparison.
  size_t max_responses_per_comparison = kMaxResponsesPerComparison;
  // Called every 64 KiB read; a non-OK status ends the read with it (cancellation, shutdown). Null: never.
  std::function<absl::Status()> keep_going;
};

// A record that was skipped.
struct RecordError {
  std::string path;
  size_t line = 0;  // 1-based; for a plain-text document, the line where the problem is
  std::string message;
  // "path:line: message"
  std::string ToString() const;
};

// What a reader found. num_lines == num_blank_lines + records.size() + num_bad_records for JSONL files; for plain
// text, records and bad records are documents that span lines.
template <typename Record>
struct ReadResult {
  std::vector<Record> records;      // the good records, in file order
  std::vector<RecordError> errors;  // the first max_reported_errors bad records, in file order
  size_t num_bad_records = 0;       // all bad records, also those beyond max_reported_errors
  size_t num_lines = 0;             // lines in the file, blank ones included
  size_t num_blank_lines = 0;
};

using SftReadResult = ReadResult<SftExample>;
using ComparisonReadResult = ReadResult<Comparison>;
using PromptReadResult = ReadResult<PromptRecord>;
using PretrainingReadResult = ReadResult<PretrainingText>;

// {"prompt": string, "response": string}; both non-empty.
absl::StatusOr<SftReadResult> ReadSftExamples(const std::string& path, const ReadOptions& options = {});

// Either form per line, mixed freely:
//   ranked   {"prompt": string, "responses": [{"text": string, "rank": positive integer}, ...]}
//   pairwise {"prompt": string, "chosen": string, "rejected": string} -> responses {chosen, 1}, {rejected, 2}
// A line with both "responses" and "chosen"/"rejected" is ambiguous and bad; so is a pair whose chosen and rejected
// texts are equal. See Comparison for the rest.
absl::StatusOr<ComparisonReadResult> ReadComparisons(const std::string& path, const ReadOptions& options = {});

// {"prompt": string}; non-empty.
absl::StatusOr<PromptReadResult> ReadPrompts(const std::string& path, const ReadOptions& options = {});

// By the file name's extension:
//   .jsonl  {"text": string} a line, non-empty;
//   .txt    documents separated by one or more blank lines (nothing but spaces and tabs); a document's lines are
//           joined with "\n" ("\r\n" becomes "\n"), otherwise kept byte for byte. A bad line (not UTF-8, too long)
//           makes its whole document a bad record, reported at that line.
// Any other extension: InvalidArgument.
absl::StatusOr<PretrainingReadResult> ReadPretrainingTexts(const std::string& path, const ReadOptions& options = {});

}  // namespace rlhf::data

#endif  // RLHF_COMMON_DATA_JSONL_READER_H_
