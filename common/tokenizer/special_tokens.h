// Finding special tokens ("<|endoftext|>") in text. Internal to common/tokenizer.
#ifndef RLHF_COMMON_TOKENIZER_SPECIAL_TOKENS_H_
#define RLHF_COMMON_TOKENIZER_SPECIAL_TOKENS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace rlhf::tokenizer::internal {

struct SpecialToken {
  std::string content;  // the text that stands for the token; never empty
  int32_t id;
};

// Splits `text` at occurrences of `specials` (leftmost first; the longest when several start at the same byte) and
// calls `on_text` for each non-empty stretch of ordinary text and `on_special` for each special token, in order.
// Stops at and returns the first error of a callback.
absl::Status SplitOnSpecialTokens(absl::string_view text, const std::vector<SpecialToken>& specials,
                                  absl::FunctionRef<absl::Status(absl::string_view)> on_text,
                                  absl::FunctionRef<void(int32_t)> on_special);

}  // namespace rlhf::tokenizer::internal

#endif  // RLHF_COMMON_TOKENIZER_SPECIAL_TOKENS_H_
