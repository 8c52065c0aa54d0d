// GPT-2's pre-tokenisation: the regex that cuts text into the pieces BPE encodes one by one. Internal to
// common/tokenizer; the regex engine (PCRE2) stays out of public headers.
#ifndef RLHF_COMMON_TOKENIZER_GPT2_PRETOKENIZER_H_
#define RLHF_COMMON_TOKENIZER_GPT2_PRETOKENIZER_H_

#include <memory>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct pcre2_real_code_8;  // PCRE2's compiled pattern (pcre2_code with 8-bit code units)

namespace rlhf::tokenizer::internal {

// GPT-2's pattern, from openai/gpt-2 src/encoder.py.
inline constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Splits text into GPT-2's pre-tokens with kGpt2Pattern over UTF-8 (Unicode letters, numbers and white space),
// JIT-compiled when the platform allows.
//
// Invalid UTF-8: bytes that are not part of a well-formed character match no part of the pattern, so each maximal
// run of them (between two matches) becomes a piece of its own. The pieces always tile the input exactly, so no
// byte is lost and encoding stays lossless.
//
// Thread safety: immutable after Create; Split may be called from many threads at once.
class Gpt2PreTokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Gpt2PreTokenizer>> Create();
  ~Gpt2PreTokenizer();
  Gpt2PreTokenizer(const Gpt2PreTokenizer&) = delete;
  Gpt2PreTokenizer& operator=(const Gpt2PreTokenizer&) = delete;

  // Calls `on_piece` for each piece of `text`, in order; the pieces concatenate to `text`. An error means the regex
  // engine failed (resource limits), never bad input.
  absl::Status Split(absl::string_view text, absl::FunctionRef<void(absl::string_view)> on_piece) const;

 private:
  explicit Gpt2PreTokenizer(pcre2_real_code_8* code) : code_(code) {}

  pcre2_real_code_8* code_;  // owned
};

}  // namespace rlhf::tokenizer::internal

#endif  // RLHF_COMMON_TOKENIZER_GPT2_PRETOKENIZER_H_
