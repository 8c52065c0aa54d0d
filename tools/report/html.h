// Small helpers for writing HTML and SVG text.
#ifndef RLHF_TOOLS_REPORT_HTML_H_
#define RLHF_TOOLS_REPORT_HTML_H_

#include <string>

#include "absl/strings/string_view.h"

namespace rlhf::report {

// `text` safe inside an element or a quoted attribute: & < > " ' become entities, and bytes that are not UTF-8
// become U+FFFD (a browser would otherwise guess the encoding). Other control characters except tab, line feed and
// carriage return are dropped (XML, hence inline SVG, forbids them).
std::string EscapeHtml(absl::string_view text);

// A number for people: up to `digits` significant digits, no exponent for ordinary magnitudes ("0.0123",
// "1.5e+06"), "-" for NaN and infinities.
std::string FormatNumber(double value, int digits = 4);

}  // namespace rlhf::report

#endif  // RLHF_TOOLS_REPORT_HTML_H_
