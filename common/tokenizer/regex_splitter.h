// Regular expressions of Hugging Face tokenizer.json files (written for Oniguruma, which the Rust `tokenizers`
// library runs) translated to PCRE2, and the "Isolated" split they drive. Internal to common/tokenizer; PCRE2 stays
// out of public headers.
#ifndef RLHF_COMMON_TOKENIZER_REGEX_SPLITTER_H_
#define RLHF_COMMON_TOKENIZER_REGEX_SPLITTER_H_

#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct pcre2_real_code_8;  // PCRE2's compiled pattern (pcre2_code with 8-bit code units)

namespace rlhf::tokenizer::internal {

// The pre-tokenisation regex of Hugging Face's ByteLevel pre-tokenizer with `use_regex: true` (GPT-2's pattern), in
// Oniguruma syntax.
inline constexpr char kByteLevelPattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Translates an Oniguruma pattern to a PCRE2 pattern (UTF + UCP mode) that matches the same text:
//   - `\s` becomes the class of Unicode White_Space (Oniguruma's `\s`, which includes U+0085 and excludes U+FEFF;
//     PCRE2's own `\s` differs), `\S` outside a character class its complement; `.` becomes `[^\n]`; `\v` (a
//     vertical tab in Oniguruma) becomes `\x{0b}`; `\uHHHH` becomes `\x{HHHH}`;
//   - constructs whose meaning differs between the two engines, or that the translation does not handle, are refused
//     with InvalidArgument naming the construct and its byte offset: `\S` inside a class, `\w \W \b \B \h \H` and
//     other letter escapes not listed here, `^` and `$` (line anchors in Oniguruma), POSIX brackets, nested classes
//     and class intersections (`&&`), `{,n}`, possessive intervals, inline options other than `i`, conditionals.
// Passed through unchanged: literals, `\d \D \p{..} \P{..} \n \r \t \f \e \a \xHH \x{..}`, escaped punctuation,
// `\A \z`, groups `(?: (?= (?! (?<= (?<! (?> (?<name>`, `(?i)` / `(?i:` / `(?-i:`, quantifiers.
absl::StatusOr<std::string> OnigurumaToPcre2(absl::string_view pattern);

// `literal` escaped so that PCRE2 matches it literally (Hugging Face's Split with a "String" pattern).
std::string QuotePcre2(absl::string_view literal);

// Splits text at the matches of one PCRE2 pattern the way Hugging Face's Split pre-tokenizer does with behaviour
// "Isolated": every match is a piece, and so is every non-empty stretch between matches. Compiled in UTF + UCP mode
// with PCRE2_MATCH_INVALID_UTF (JIT when available).
//
// Invalid UTF-8: bytes outside well-formed characters never match, so they end up in the pieces between matches.
// The pieces always tile the input exactly.
//
// Thread safety: immutable after Create; Split may be called from many threads at once.
class RegexSplitter {
 public:
  // InvalidArgument naming `description` when `pcre2_pattern` does not compile or can match the empty string
  // (whose splits Hugging Face and PCRE2 would place differently).
  static absl::StatusOr<std::unique_ptr<RegexSplitter>> Create(const std::string& pcre2_pattern,
                                                               absl::string_view description);
  ~RegexSplitter();
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;

  // Calls `on_piece` for each piece of `text`, in order. An error means the regex engine hit a resource limit,
  // never bad input.
  absl::Status Split(absl::string_view text, absl::FunctionRef<void(absl::string_view)> on_piece) const;

 private:
  explicit RegexSplitter(pcre2_real_code_8* code) : code_(code) {}

  pcre2_real_code_8* code_;  // owned
};

}  // namespace rlhf::tokenizer::internal

#endif  // RLHF_COMMON_TOKENIZER_REGEX_SPLITTER_H_
