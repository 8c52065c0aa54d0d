// Finding Hugging Face "added tokens" (`<|im_start|>`, `<think>`, ...) in text, as tokenizers' AddedVocabulary does.
// Internal to common/tokenizer.
#ifndef RLHF_COMMON_TOKENIZER_ADDED_TOKEN_MATCHER_H_
#define RLHF_COMMON_TOKENIZER_ADDED_TOKEN_MATCHER_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace rlhf::tokenizer::internal {

struct AddedTokenPattern {
  std::string content;  // the text matched; never empty
  int32_t id;
  bool lstrip = false;  // the match also takes the white space before it
  bool rstrip = false;  // the match also takes the white space after it
};

// Splits text at occurrences of a set of patterns: leftmost first, and the longest of those starting at the same
// byte (Aho-Corasick "leftmost-longest", as tokenizers does); matching resumes after the match. A pattern with
// `lstrip` widens its match to the white space (Unicode White_Space) just before it, down to the end of the previous
// match; with `rstrip`, to the white space just after it (and matching resumes after that).
//
// Thread safety: immutable after construction.
class AddedTokenMatcher {
 public:
  explicit AddedTokenMatcher(std::vector<AddedTokenPattern> patterns);

  bool empty() const { return patterns_.empty(); }

  // Calls `on_text` for each non-empty stretch between matches and `on_token` with the id of each match, in order.
  // Stops at and returns the first error of `on_text`.
  absl::Status Split(absl::string_view text, absl::FunctionRef<absl::Status(absl::string_view)> on_text,
                     absl::FunctionRef<void(int32_t)> on_token) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
    int32_t pattern = -1;                                     // index into patterns_ when a pattern ends here
  };

  int32_t Child(int32_t node, unsigned char byte) const;

  std::vector<AddedTokenPattern> patterns_;
  std::vector<Node> nodes_;             // nodes_[0] is the root
  std::array<bool, 256> first_byte_{};  // bytes some pattern starts with
};

}  // namespace rlhf::tokenizer::internal

#endif  // RLHF_COMMON_TOKENIZER_ADDED_TOKEN_MATCHER_H_
