// Deterministic train/validation splits that keep every record of a prompt on one side, so validation measures
// prompts the model never trained on.
#ifndef RLHF_COMMON_DATA_SPLIT_H_
#define RLHF_COMMON_DATA_SPLIT_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rlhf::data {

// True when `prompt` belongs to the validation side: a 64-bit hash of (seed, prompt bytes), taken as a number u in
// [0, 1), is below `validation_fraction`. The answer depends on nothing else (not on the other records, the order,
// the platform or the process), so a prompt stays on its side as a dataset grows between rounds of collection.
// validation_fraction must be in [0, 1]; 0 puts nothing on the validation side and 1 everything.
bool IsValidationPrompt(absl::string_view prompt, double validation_fraction, uint64_t seed);

// OK when 0 <= validation_fraction <= 1, otherwise InvalidArgument naming the value.
absl::Status ValidateValidationFraction(double validation_fraction);

template <typename Record>
struct DataSplit {
  std::vector<Record> train;       // in input order
  std::vector<Record> validation;  // in input order
};

// Splits records that have a `prompt` member (SftExample, Comparison, PromptRecord) by IsValidationPrompt; records
// whose prompts are byte-for-byte equal land on the same side. The validation side holds about validation_fraction
// of the distinct prompts, in expectation rather than exactly (a small dataset may get none). InvalidArgument when
// validation_fraction is outside [0, 1].
template <typename Record>
absl::StatusOr<DataSplit<Record>> SplitByPrompt(std::vector<Record> records, double validation_fraction,
                                                uint64_t seed) {
  if (absl::Status s = ValidateValidationFraction(validation_fraction); !s.ok()) return s;
  DataSplit<Record> split;
  for (Record& record : records) {
    auto& side = IsValidationPrompt(record.prompt, validation_fraction, seed) ? split.validation : split.train;
    side.push_back(std::move(record));
  }
  return split;
}

}  // namespace rlhf::data

#endif  // RLHF_COMMON_DATA_SPLIT_H_
