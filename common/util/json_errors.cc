#include "common/util/json_errors.h"

#include "absl/strings/match.h"

namespace rlhf::util {

std::string JsonErrorText(absl::string_view what) {
  if (absl::StartsWith(what, "[json.exception.")) {
    const size_t close = what.find("] ");
    if (close != absl::string_view::npos) what.remove_prefix(close + 2);
  }
  const size_t quoted = what.find("; last read: ");
  if (quoted != absl::string_view::npos) what = what.substr(0, quoted);
  // Anything else the parser quotes (e.g. a bad byte in "invalid string: ill-formed UTF-8 byte") stays ASCII only.
  std::string out;
  out.reserve(what.size());
  for (char c : what) out.push_back(static_cast<unsigned char>(c) < 0x80 ? c : '?');
  return out;
}

}  // namespace rlhf::util
