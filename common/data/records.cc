#include "common/data/records.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace rlhf::data {
namespace {

absl::Status CheckUtf8(absl::string_view field, absl::string_view text) {
  const size_t bad = FindInvalidUtf8(text);
  if (bad == absl::string_view::npos) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat("%s is not valid UTF-8 (ill-formed byte 0x%02X at byte offset %d)",
                                                    field, static_cast<uint8_t>(text[bad]), bad));
}

absl::Status CheckNonEmptyUtf8(absl::string_view name, absl::string_view text) {
  const std::string field = absl::StrCat("field \"", name, "\"");
  if (text.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
  return CheckUtf8(field, text);
}

}  // namespace

size_t FindInvalidUtf8(absl::string_view text) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const uint8_t b = bytes[i];
    if (b < 0x80) {
      ++i;
      continue;
    }
    // Table 3-7: the lead byte fixes the length and the range of the second byte; later bytes are 80..BF.
    int length = 0;
    uint8_t low = 0x80, high = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      length = 2;
    } else if (b == 0xE0) {
      length = 3, low = 0xA0;
    } else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) {
      length = 3;
    } else if (b == 0xED) {
      length = 3, high = 0x9F;  // no surrogates
    } else if (b == 0xF0) {
      length = 4, low = 0x90;
    } else if (b >= 0xF1 && b <= 0xF3) {
      length = 4;
    } else if (b == 0xF4) {
      length = 4, high = 0x8F;  // nothing above U+10FFFF
    } else {
      return i;  // 80..C1 (continuation or overlong lead) or F5..FF
    }
    if (i + 1 >= n || bytes[i + 1] < low || bytes[i + 1] > high) return i;
    for (int k = 2; k < length; ++k) {
      if (i + k >= n || bytes[i + k] < 0x80 || bytes[i + k] > 0xBF) return i;
    }
    i += length;
  }
  return absl::string_view::npos;
}

std::vector<ComparisonPair> ComparisonPairs(const Comparison& comparison) {
  std::vector<ComparisonPair> pairs;
  const auto& responses = comparison.responses;
  for (size_t i = 0; i < responses.size(); ++i) {
    for (size_t j = i + 1; j < responses.size(); ++j) {
      if (responses[i].rank < responses[j].rank) {
        pairs.push_back({i, j});
      } else if (responses[j].rank < responses[i].rank) {
        pairs.push_back({j, i});
      }
    }
  }
  return pairs;
}

namespace {

// A chat prompt's messages (when there are any): roles given, contents UTF-8, and `prompt` their one-text form.
absl::Status CheckMessages(const std::vector<ChatTurn>& messages, const std::string& prompt) {
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role.empty()) return absl::InvalidArgumentError(absl::StrCat("messages[", i, "].role is empty"));
    if (absl::Status s = CheckUtf8(absl::StrCat("messages[", i, "].role"), messages[i].role); !s.ok()) return s;
    if (absl::Status s = CheckUtf8(absl::StrCat("messages[", i, "].content"), messages[i].content); !s.ok()) return s;
  }
  if (!messages.empty() && prompt != ChatPromptText(messages)) {
    return absl::InvalidArgumentError("prompt is not the one-text form of messages (ChatPromptText)");
  }
  return absl::OkStatus();
}

}  // namespace

std::string ChatPromptText(const std::vector<ChatTurn>& messages) {
  std::string text;
  for (const ChatTurn& m : messages) absl::StrAppend(&text, text.empty() ? "" : "\n", m.role, ": ", m.content);
  return text;
}

absl::Status ValidateSftExample(const SftExample& example) {
  if (absl::Status s = CheckNonEmptyUtf8("prompt", example.prompt); !s.ok()) return s;
  if (absl::Status s = CheckMessages(example.messages, example.prompt); !s.ok()) return s;
  return CheckNonEmptyUtf8("response", example.response);
}

absl::Status ValidateComparison(const Comparison& comparison, size_t max_responses) {
  if (absl::Status s = CheckNonEmptyUtf8("prompt", comparison.prompt); !s.ok()) return s;
  if (absl::Status s = CheckMessages(comparison.messages, comparison.prompt); !s.ok()) return s;
  const auto& responses = comparison.responses;
  if (responses.size() < kMinResponsesPerComparison) {
    return absl::InvalidArgumentError(
        absl::StrCat("a comparison needs at least ", kMinResponsesPerComparison, " responses, got ", responses.size()));
  }
  if (responses.size() > max_responses) {
    return absl::InvalidArgumentError(
        absl::StrCat("has ", responses.size(), " responses, more than the limit of ", max_responses));
  }
  std::unordered_map<std::string_view, size_t> first_with_text;
  bool all_tie = true;
  for (size_t i = 0; i < responses.size(); ++i) {
    const RankedResponse& response = responses[i];
    if (response.rank < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("responses[", i, "].rank must be a positive integer, got ", response.rank));
    }
    if (absl::Status s = CheckUtf8(absl::StrCat("responses[", i, "].text"), response.text); !s.ok()) return s;
    if (response.rank != responses[0].rank) all_tie = false;
    const auto [it, inserted] = first_with_text.emplace(std::string_view(response.text), i);
    if (!inserted && responses[it->second].rank != response.rank) {
      return absl::InvalidArgumentError(absl::StrCat("responses[", it->second, "] and responses[", i,
                                                     "] have the same text but different ranks (",
                                                     responses[it->second].rank, " and ", response.rank, ")"));
    }
  }
  if (all_tie) {
    return absl::InvalidArgumentError(
        absl::StrCat("all responses tie (rank ", responses[0].rank, "): no comparison pair"));
  }
  return absl::OkStatus();
}

absl::Status ValidatePromptRecord(const PromptRecord& record) {
  if (absl::Status s = CheckNonEmptyUtf8("prompt", record.prompt); !s.ok()) return s;
  return CheckMessages(record.messages, record.prompt);
}

absl::Status ValidatePretrainingText(const PretrainingText& text) { return CheckNonEmptyUtf8("text", text.text); }

}  // namespace rlhf::data
