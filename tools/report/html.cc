#include "tools/report/html.h"

#include <cmath>

#include "absl/strings/str_format.h"
#include "common/tokenizer/tokenizer.h"

namespace rlhf::report {

std::string EscapeHtml(absl::string_view text) {
  const std::string valid = tokenizer::ReplaceInvalidUtf8(text);
  std::string out;
  out.reserve(valid.size() + valid.size() / 8);
  for (const char c : valid) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') break;
        if (c == 0x7F) break;
        out.push_back(c);
    }
  }
  return out;
}

std::string FormatNumber(double value, int digits) {
  if (!std::isfinite(value)) return "-";
  if (value == 0) return "0";
  return absl::StrFormat("%.*g", digits, value);
}

}  // namespace rlhf::report
