#include "common/tokenizer/added_token_matcher.h"

#include <algorithm>
#include <utility>

#include "common/tokenizer/utf8.h"
#include "common/util/status_macros.h"

namespace rlhf::tokenizer::internal {
namespace {

// The start of the white space that ends `text` (text.size() when it does not end in white space).
size_t TrailingWhiteSpaceStart(absl::string_view text) {
  size_t run_start = 0;
  bool in_run = false;
  for (size_t pos = 0; pos < text.size();) {
    const Utf8Char c = NextUtf8Char(text, pos);
    const bool space = c.valid && IsUnicodeWhiteSpace(c.code_point);
    if (space && !in_run) run_start = pos;
    in_run = space;
    pos += static_cast<size_t>(c.length);
  }
  return in_run ? run_start : text.size();
}

// The length of the white space that starts `text`.
size_t LeadingWhiteSpaceLength(absl::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    const Utf8Char c = NextUtf8Char(text, pos);
    if (!c.valid || !IsUnicodeWhiteSpace(c.code_point)) break;
    pos += static_cast<size_t>(c.length);
  }
  return pos;
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedTokenPattern> patterns) : patterns_(std::move(patterns)) {
  nodes_.emplace_back();
  for (size_t p = 0; p < patterns_.size(); ++p) {
    const std::string& content = patterns_[p].content;
    if (content.empty()) continue;
    first_byte_[static_cast<unsigned char>(content[0])] = true;
    int32_t node = 0;
    for (const char ch : content) {
      const auto byte = static_cast<unsigned char>(ch);
      int32_t next = Child(node, byte);
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        auto& children = nodes_[node].children;
        children.insert(std::lower_bound(children.begin(), children.end(), std::make_pair(byte, int32_t{0})),
                        {byte, next});
        nodes_.emplace_back();  // invalidates `children`; it is not used after this
      }
      node = next;
    }
    if (nodes_[node].pattern < 0) nodes_[node].pattern = static_cast<int32_t>(p);
  }
}

int32_t AddedTokenMatcher::Child(int32_t node, unsigned char byte) const {
  const auto& children = nodes_[node].children;
  const auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(byte, int32_t{0}));
  return it != children.end() && it->first == byte ? it->second : -1;
}

absl::Status AddedTokenMatcher::Split(absl::string_view text,
                                      absl::FunctionRef<absl::Status(absl::string_view)> on_text,
                                      absl::FunctionRef<void(int32_t)> on_token) const {
  size_t emitted = 0;  // text before this offset has been passed on
  size_t pos = 0;      // where the search resumes
  while (pos < text.size()) {
    if (!first_byte_[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    // The longest pattern starting at `pos`.
    int32_t best = -1;
    size_t best_end = 0;
    int32_t node = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      node = Child(node, static_cast<unsigned char>(text[i]));
      if (node < 0) break;
      if (nodes_[node].pattern >= 0) {
        best = nodes_[node].pattern;
        best_end = i + 1;
      }
    }
    if (best < 0) {
      ++pos;
      continue;
    }
    const AddedTokenPattern& pattern = patterns_[best];
    size_t start = pos;
    size_t stop = best_end;
    if (pattern.lstrip) {
      // White space before the end of the previous match is not taken again.
      start = emitted + TrailingWhiteSpaceStart(text.substr(emitted, start - emitted));
    }
    if (pattern.rstrip) stop += LeadingWhiteSpaceLength(text.substr(stop));
    if (start > emitted) RETURN_IF_ERROR(on_text(text.substr(emitted, start - emitted)));
    on_token(pattern.id);
    emitted = stop;
    pos = stop;
  }
  if (emitted < text.size()) RETURN_IF_ERROR(on_text(text.substr(emitted)));
  return absl::OkStatus();
}

}  // namespace rlhf::tokenizer::internal
