#include "common/data/jsonl_writer.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "common/util/file_util.h"
#include "nlohmann/json.hpp"

namespace rlhf::data {
namespace {

using ::nlohmann::ordered_json;  // keeps keys in insertion order

// Compact, UTF-8 kept, invalid bytes replaced: dump() cannot throw with error_handler_t::replace.
std::string Dump(const ordered_json& value) {
  return value.dump(-1, ' ', /*ensure_ascii=*/false, ordered_json::error_handler_t::replace);
}

absl::Status Validate(const SftExample& r) { return ValidateSftExample(r); }
absl::Status Validate(const Comparison& r) { return ValidateComparison(r, std::numeric_limits<size_t>::max()); }
absl::Status Validate(const PromptRecord& r) { return ValidatePromptRecord(r); }
absl::Status Validate(const PretrainingText& r) { return ValidatePretrainingText(r); }

// "prompt", or "messages" for a chat prompt.
void SetPrompt(const std::string& prompt, const std::vector<ChatTurn>& messages, ordered_json* object) {
  if (messages.empty()) {
    (*object)["prompt"] = prompt;
    return;
  }
  ordered_json list = ordered_json::array();
  for (const ChatTurn& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
  (*object)["messages"] = std::move(list);
}

template <typename Record>
absl::Status WriteJsonl(const std::string& path, const std::vector<Record>& records) {
  std::string contents;
  for (size_t i = 0; i < records.size(); ++i) {
    if (absl::Status s = Validate(records[i]); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("records[", i, "]: ", s.message()));
    }
    absl::StrAppend(&contents, ToJsonLine(records[i]), "\n");
  }
  return util::WriteFileAtomically(path, contents);
}

}  // namespace

std::string ToJsonLine(const SftExample& example) {
  ordered_json object;
  SetPrompt(example.prompt, example.messages, &object);
  object["response"] = example.response;
  return Dump(object);
}

std::string ToJsonLine(const Comparison& comparison) {
  ordered_json object;
  SetPrompt(comparison.prompt, comparison.messages, &object);
  ordered_json responses = ordered_json::array();
  for (const RankedResponse& response : comparison.responses) {
    ordered_json element;
    element["text"] = response.text;
    element["rank"] = response.rank;
    responses.push_back(std::move(element));
  }
  object["responses"] = std::move(responses);
  return Dump(object);
}

std::string ToJsonLine(const PromptRecord& record) {
  ordered_json object;
  SetPrompt(record.prompt, record.messages, &object);
  return Dump(object);
}

std::string ToJsonLine(const PretrainingText& text) {
  ordered_json object;
  object["text"] = text.text;
  return Dump(object);
}

absl::Status WriteSftExamples(const std::string& path, const std::vector<SftExample>& examples) {
  return WriteJsonl(path, examples);
}

absl::Status WriteComparisons(const std::string& path, const std::vector<Comparison>& comparisons) {
  return WriteJsonl(path, comparisons);
}

absl::Status WritePrompts(const std::string& path, const std::vector<PromptRecord>& prompts) {
  return WriteJsonl(path, prompts);
}

absl::Status WritePretrainingTexts(const std::string& path, const std::vector<PretrainingText>& texts) {
  return WriteJsonl(path, texts);
}

}  // namespace rlhf::data
