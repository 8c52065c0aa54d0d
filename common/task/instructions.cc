#include "common/task/instructions.h"

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace rlhf::task {
namespace {

std::vector<std::string> SplitWords(absl::string_view text) {
  return absl::StrSplit(text, absl::ByAnyChar(" \t\n\v\f\r"), absl::SkipEmpty());
}

absl::Status NotAnInstruction(absl::string_view prompt, absl::string_view why) {
  constexpr size_t kMaxQuoted = 80;
  std::string quoted(prompt.substr(0, kMaxQuoted));
  if (prompt.size() > kMaxQuoted) quoted += "...";
  return absl::InvalidArgumentError(
      absl::StrCat("prompt \"", absl::CHexEscape(quoted), "\" is not an instruction of the built-in task: ", why));
}

bool IsLowerWord(absl::string_view word) {
  const std::vector<std::string>& words = LowerWords();
  return std::find(words.begin(), words.end(), word) != words.end();
}

}  // namespace

absl::string_view FamilyName(Family family) {
  switch (family) {
    case Family::kList:
      return "list";
    case Family::kRepeat:
      return "repeat";
    case Family::kReverse:
      return "reverse";
    case Family::kUpper:
      return "upper";
  }
  return "unknown";
}

const std::vector<Category>& Categories() {
  static const std::vector<Category>* const categories = new std::vector<Category>{
      {"animal", {"cat", "dog", "cow", "pig", "hen", "fox", "owl", "bee"}},
      {"color", {"red", "blue", "green", "pink", "gray", "gold", "teal", "cyan"}},
      {"food", {"bread", "rice", "soup", "cake", "milk", "egg", "corn", "tea"}},
  };
  return *categories;
}

const std::vector<std::string>& LowerWords() {
  static const std::vector<std::string>* const words = [] {
    auto* out = new std::vector<std::string>();
    for (const Category& category : Categories()) out->insert(out->end(), category.words.begin(), category.words.end());
    return out;
  }();
  return *words;
}

std::string ToUpperWord(absl::string_view word) { return absl::AsciiStrToUpper(word); }

std::vector<std::string> TaskVocabulary() {
  std::vector<std::string> vocab = {kPadToken, kBosToken, kEosToken, kUnkToken, kSeparator};
  for (const Family family : kAllFamilies) vocab.emplace_back(FamilyName(family));
  for (int32_t n = 1; n <= kMaxListCount; ++n) vocab.push_back(absl::StrCat(n));
  for (const Category& category : Categories()) vocab.push_back(category.name);
  for (const std::string& word : LowerWords()) vocab.push_back(word);
  for (const std::string& word : LowerWords()) vocab.push_back(ToUpperWord(word));
  return vocab;
}

std::unique_ptr<tokenizer::WordTokenizer> MakeTaskTokenizer() {
  tokenizer::WordTokenizerOptions options;
  options.vocab = TaskVocabulary();
  options.special_tokens = {kPadToken, kBosToken, kEosToken, kUnkToken};
  options.unk_token = kUnkToken;
  options.eos_token = kEosToken;
  options.pad_token = kPadToken;
  options.bos_token = kBosToken;
  // The vocabulary is fixed and valid (a test builds it), so Create cannot fail here.
  return *tokenizer::WordTokenizer::Create(std::move(options));
}

std::string FormatPrompt(const Instruction& instruction) {
  std::string prompt(FamilyName(instruction.family));
  if (instruction.family == Family::kList) {
    absl::StrAppend(&prompt, " ", instruction.count, " ", Categories()[static_cast<size_t>(instruction.category)].name);
  } else {
    for (const std::string& word : instruction.words) absl::StrAppend(&prompt, " ", word);
  }
  absl::StrAppend(&prompt, " ", kSeparator);
  return prompt;
}

absl::StatusOr<Instruction> ParsePrompt(absl::string_view prompt) {
  std::vector<std::string> words = SplitWords(prompt);
  if (words.empty()) return NotAnInstruction(prompt, "it is empty");
  if (words.back() != kSeparator) {
    return NotAnInstruction(prompt, absl::StrCat("it does not end with the separator \"", kSeparator, "\""));
  }
  words.pop_back();
  Instruction instruction;
  bool known = false;
  for (const Family family : kAllFamilies) {
    if (!words.empty() && words[0] == FamilyName(family)) {
      instruction.family = family;
      known = true;
    }
  }
  if (!known) return NotAnInstruction(prompt, "it does not start with list, repeat, reverse or upper");
  if (instruction.family == Family::kList) {
    if (words.size() != 3) return NotAnInstruction(prompt, "expected \"list <count> <category> :\"");
    const std::string& count = words[1];
    if (count.size() != 1 || count[0] < '0' + kMinListCount || count[0] > '0' + kMaxListCount) {
      return NotAnInstruction(prompt,
                              absl::StrCat("the count must be a digit from ", kMinListCount, " to ", kMaxListCount));
    }
    instruction.count = count[0] - '0';
    for (size_t c = 0; c < Categories().size(); ++c) {
      if (Categories()[c].name == words[2]) instruction.category = static_cast<int32_t>(c);
    }
    if (instruction.category < 0) return NotAnInstruction(prompt, "the category must be animal, color or food");
    return instruction;
  }
  instruction.words.assign(words.begin() + 1, words.end());
  const int32_t n = static_cast<int32_t>(instruction.words.size());
  if (n < kMinInputWords || n > kMaxInputWords) {
    return NotAnInstruction(prompt, absl::StrCat("expected ", kMinInputWords, " to ", kMaxInputWords,
                                                 " words before the separator, got ", n));
  }
  for (const std::string& word : instruction.words) {
    if (!IsLowerWord(word)) {
      return NotAnInstruction(prompt, absl::StrCat("\"", absl::CHexEscape(word), "\" is not a word of the task"));
    }
  }
  return instruction;
}

std::vector<std::string> ReferenceAnswer(const Instruction& instruction) {
  switch (instruction.family) {
    case Family::kList: {
      const std::vector<std::string>& words = Categories()[static_cast<size_t>(instruction.category)].words;
      return std::vector<std::string>(words.begin(), words.begin() + instruction.count);
    }
    case Family::kRepeat:
      return instruction.words;
    case Family::kReverse:
      return std::vector<std::string>(instruction.words.rbegin(), instruction.words.rend());
    case Family::kUpper: {
      std::vector<std::string> out;
      for (const std::string& word : instruction.words) out.push_back(ToUpperWord(word));
      return out;
    }
  }
  return {};
}

Response ParseResponse(absl::string_view text, ResponseForm form) {
  Response response;
  if (form == ResponseForm::kGeneratedText) {
    const size_t eos = text.find(kEosToken);
    response.finished = eos != absl::string_view::npos;
    if (response.finished) text = text.substr(0, eos);
  }
  response.words = SplitWords(text);
  return response;
}

int32_t EditDistance(absl::Span<const std::string> a, absl::Span<const std::string> b) {
  // One row of the dynamic programme: row[j] = distance between a[0, i) and b[0, j).
  std::vector<int32_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = static_cast<int32_t>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    int32_t diagonal = row[0];  // distance(a[0, i-1), b[0, j-1))
    row[0] = static_cast<int32_t>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int32_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

int32_t CountErrors(const Instruction& instruction, absl::Span<const std::string> words) {
  if (instruction.family != Family::kList) return EditDistance(words, ReferenceAnswer(instruction));
  const std::vector<std::string>& category = Categories()[static_cast<size_t>(instruction.category)].words;
  int32_t errors = std::abs(static_cast<int32_t>(words.size()) - instruction.count);
  absl::flat_hash_set<absl::string_view> seen;
  for (const std::string& word : words) {
    if (std::find(category.begin(), category.end(), word) == category.end()) {
      ++errors;  // not a word of the category
    } else if (!seen.insert(word).second) {
      ++errors;  // a repeat
    }
  }
  return errors;
}

int32_t ScoreResponse(const Instruction& instruction, const Response& response) {
  return -(CountErrors(instruction, response.words) + (response.finished ? 0 : kUnfinishedPenalty));
}

absl::StatusOr<int32_t> TrueScore(absl::string_view prompt, absl::string_view response, ResponseForm form) {
  absl::StatusOr<Instruction> instruction = ParsePrompt(prompt);
  if (!instruction.ok()) return instruction.status();
  return ScoreResponse(*instruction, ParseResponse(response, form));
}

absl::StatusOr<bool> IsPerfect(absl::string_view prompt, absl::string_view response, ResponseForm form) {
  absl::StatusOr<int32_t> score = TrueScore(prompt, response, form);
  if (!score.ok()) return score.status();
  return *score == 0;
}

}  // namespace rlhf::task
