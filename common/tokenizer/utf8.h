// UTF-8 helpers shared by the tokenizers. Internal to common/tokenizer.
#ifndef RLHF_COMMON_TOKENIZER_UTF8_H_
#define RLHF_COMMON_TOKENIZER_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace rlhf::tokenizer::internal {

// The well-formed UTF-8 character starting at `bytes[pos]` (pos < bytes.size()): its length (1..4) and code point.
// When the bytes there are ill-formed, `valid` is false and `length` is the length of the maximal subpart
// (Unicode 15 §3.9, the bytes Python's errors="replace" turns into one U+FFFD), at least 1.
struct Utf8Char {
  bool valid;
  int length;
  uint32_t code_point;
};
Utf8Char NextUtf8Char(absl::string_view bytes, size_t pos);

// Decodes well-formed UTF-8 into code points; nullopt when `bytes` is not well formed.
std::optional<std::vector<uint32_t>> DecodeUtf8(absl::string_view bytes);

// Appends the UTF-8 encoding of `code_point` (< 0x110000) to `out`.
void AppendUtf8(uint32_t code_point, std::string* out);

// Whether `code_point` has Unicode's White_Space property (U+0009..U+000D, U+0020, U+0085, U+00A0, U+1680,
// U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000): what `\s` matches in Oniguruma and in Rust's regex
// crate, which Hugging Face tokenizers use. U+FEFF and U+200B are not white space; U+0085 is.
bool IsUnicodeWhiteSpace(uint32_t code_point);

// `text` made safe to quote in an error message: cut to `max_bytes` (marked with "..."), control characters (and
// every byte >= 0x80 when the text is not valid UTF-8) escaped C-style.
std::string QuoteForMessage(absl::string_view text, size_t max_bytes = 64);

}  // namespace rlhf::tokenizer::internal

#endif  // RLHF_COMMON_TOKENIZER_UTF8_H_
