// Unicode normalisation forms (NFC, NFD, NFKC, NFKD) for Hugging Face tokenizer.json normalizers, on utf8proc.
// Internal to common/tokenizer.
#ifndef RLHF_COMMON_TOKENIZER_UNICODE_NORMALIZER_H_
#define RLHF_COMMON_TOKENIZER_UNICODE_NORMALIZER_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rlhf::tokenizer::internal {

enum class NormalizationForm { kNfc, kNfd, kNfkc, kNfkd };

// The form named `name` in a tokenizer.json normalizer ("NFC", "NFD", "NFKC", "NFKD"); nullopt for any other name.
std::optional<NormalizationForm> NormalizationFormByName(absl::string_view name);

// `text` in normalisation form `form` (utf8proc, whose Unicode tables are those of the installed libutf8proc).
// Invalid UTF-8 is kept byte for byte: the bytes that are not part of a well-formed character split the text, and
// each maximal well-formed stretch is normalised on its own. ASCII text is returned unchanged. ResourceExhausted
// when utf8proc cannot allocate.
absl::StatusOr<std::string> NormalizeUnicode(absl::string_view text, NormalizationForm form);

// The version of the Unicode tables utf8proc normalises with, e.g. "15.0.0".
std::string UnicodeNormalizationVersion();

}  // namespace rlhf::tokenizer::internal

#endif  // RLHF_COMMON_TOKENIZER_UNICODE_NORMALIZER_H_
