#include "common/tokenizer/utf8.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace rlhf::tokenizer::internal {
namespace {

bool InRange(unsigned char c, unsigned char lo, unsigned char hi) { return c >= lo && c <= hi; }

}  // namespace

Utf8Char NextUtf8Char(absl::string_view bytes, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(bytes[i]); };
  const unsigned char lead = byte(pos);
  if (lead < 0x80) return {true, 1, lead};
  int length;
  uint32_t code_point;
  // Bounds of the second byte, which are narrower than 80..BF after some lead bytes (no overlongs, no surrogates,
  // nothing above U+10FFFF).
  unsigned char lo = 0x80, hi = 0xBF;
  if (InRange(lead, 0xC2, 0xDF)) {
    length = 2;
    code_point = lead & 0x1F;
  } else if (InRange(lead, 0xE0, 0xEF)) {
    length = 3;
    code_point = lead & 0x0F;
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;
  } else if (InRange(lead, 0xF0, 0xF4)) {
    length = 4;
    code_point = lead & 0x07;
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;
  } else {
    return {false, 1, 0};
  }
  for (int i = 1; i < length; ++i) {
    if (pos + i >= bytes.size()) return {false, i, 0};
    const unsigned char c = byte(pos + i);
    if (i == 1 ? !InRange(c, lo, hi) : !InRange(c, 0x80, 0xBF)) return {false, i, 0};
    code_point = (code_point << 6) | (c & 0x3F);
  }
  return {true, length, code_point};
}

std::optional<std::vector<uint32_t>> DecodeUtf8(absl::string_view bytes) {
  std::vector<uint32_t> code_points;
  code_points.reserve(bytes.size());
  for (size_t pos = 0; pos < bytes.size();) {
    const Utf8Char c = NextUtf8Char(bytes, pos);
    if (!c.valid) return std::nullopt;
    code_points.push_back(c.code_point);
    pos += static_cast<size_t>(c.length);
  }
  return code_points;
}

void AppendUtf8(uint32_t code_point, std::string* out) {
  if (code_point < 0x80) {
    out->push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

bool IsUnicodeWhiteSpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string QuoteForMessage(absl::string_view text, size_t max_bytes) {
  const bool cut = text.size() > max_bytes;
  if (cut) {
    // Cut at a character boundary so that a valid text stays valid.
    size_t n = max_bytes;
    while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
    text = text.substr(0, n);
  }
  const bool valid = DecodeUtf8(text).has_value();
  return absl::StrCat("\"", valid ? absl::Utf8SafeCHexEscape(text) : absl::CHexEscape(text), cut ? "...\"" : "\"");
}

}  // namespace rlhf::tokenizer::internal
