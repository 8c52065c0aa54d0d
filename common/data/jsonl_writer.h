// Writers of the JSON Lines datasets, in the format jsonl_reader.h reads.
//
// One record a line, compact JSON, keys in a fixed order, UTF-8 kept as is (not \u-escaped), "\n" line ends:
//   {"prompt":"...","response":"..."}
//   {"prompt":"...","responses":[{"text":"...","rank":1},{"text":"...","rank":2}]}   (always the ranked form)
//   {"prompt":"..."}
//   {"text":"..."}
#ifndef RLHF_COMMON_DATA_JSONL_WRITER_H_
#define RLHF_COMMON_DATA_JSONL_WRITER_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/data/records.h"

namespace rlhf::data {

// One record as a JSON line, without the trailing "\n". Never fails and does not validate: bytes that are not UTF-8
// come out as U+FFFD. Use the writers below (or Validate*) to keep bad records out of files.
std::string ToJsonLine(const SftExample& example);
std::string ToJsonLine(const Comparison& comparison);
std::string ToJsonLine(const PromptRecord& record);
std::string ToJsonLine(const PretrainingText& text);

// Replace `path` with the records, atomically and durably (util::WriteFileAtomically: temp file, fsync, rename), so
// a reader sees the old file or the whole new one. Every record is validated first (records.h; comparisons without
// the K limit, which is a reading policy); the first bad one gives InvalidArgument "records[i]: message" and
// nothing is written. File system errors as util::WriteFileAtomically returns them.
absl::Status WriteSftExamples(const std::string& path, const std::vector<SftExample>& examples);
absl::Status WriteComparisons(const std::string& path, const std::vector<Comparison>& comparisons);
absl::Status WritePrompts(const std::string& path, const std::vector<PromptRecord>& prompts);
absl::Status WritePretrainingTexts(const std::string& path, const std::vector<PretrainingText>& texts);

}  // namespace rlhf::data

#endif  // RLHF_COMMON_DATA_JSONL_WRITER_H_
