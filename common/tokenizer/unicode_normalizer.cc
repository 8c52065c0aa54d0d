#include "common/tokenizer/unicode_normalizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/utf8.h"
#include "common/util/status_macros.h"

namespace rlhf::tokenizer::internal {
namespace {

utf8proc_option_t OptionsOf(NormalizationForm form) {
  switch (form) {
    case NormalizationForm::kNfc:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    case NormalizationForm::kNfd:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
    case NormalizationForm::kNfkc:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
    case NormalizationForm::kNfkd:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  }
  return UTF8PROC_STABLE;
}

bool IsAscii(absl::string_view text) {
  for (const char c : text) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

// Appends the normal form of `valid` (well-formed UTF-8) to `out`.
absl::Status AppendNormalized(absl::string_view valid, utf8proc_option_t options, std::string* out) {
  if (IsAscii(valid)) {  // ASCII is in every normal form
    out->append(valid.data(), valid.size());
    return absl::OkStatus();
  }
  utf8proc_uint8_t* result = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(valid.data()),
                                          static_cast<utf8proc_ssize_t>(valid.size()), &result, options);
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(result, &std::free);
  if (n < 0) {
    // The input is well formed, so the only failure left is memory.
    return absl::ResourceExhaustedError(
        absl::StrCat("Unicode normalisation of ", valid.size(), " bytes failed: ", utf8proc_errmsg(n)));
  }
  out->append(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
  return absl::OkStatus();
}

}  // namespace

std::optional<NormalizationForm> NormalizationFormByName(absl::string_view name) {
  if (name == "NFC") return NormalizationForm::kNfc;
  if (name == "NFD") return NormalizationForm::kNfd;
  if (name == "NFKC") return NormalizationForm::kNfkc;
  if (name == "NFKD") return NormalizationForm::kNfkd;
  return std::nullopt;
}

absl::StatusOr<std::string> NormalizeUnicode(absl::string_view text, NormalizationForm form) {
  const utf8proc_option_t options = OptionsOf(form);
  std::string out;
  out.reserve(text.size());
  size_t valid_begin = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const Utf8Char c = NextUtf8Char(text, pos);
    if (c.valid) {
      pos += static_cast<size_t>(c.length);
      continue;
    }
    if (pos > valid_begin) {
      RETURN_IF_ERROR(AppendNormalized(text.substr(valid_begin, pos - valid_begin), options, &out));
    }
    out.append(text.data() + pos, static_cast<size_t>(c.length));
    pos += static_cast<size_t>(c.length);
    valid_begin = pos;
  }
  if (pos > valid_begin) RETURN_IF_ERROR(AppendNormalized(text.substr(valid_begin, pos - valid_begin), options, &out));
  return out;
}

std::string UnicodeNormalizationVersion() { return utf8proc_unicode_version(); }

}  // namespace rlhf::tokenizer::internal
