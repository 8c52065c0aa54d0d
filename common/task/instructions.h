// The built-in task: four families of word-level instructions that a tiny model can learn on a CPU, with a scorer
// that judges any response (the "true" preference the simulated labeler follows).
//
//   prompt                    a correct response       what is judged
//   "list 3 animal :"         "cow owl cat"            N distinct words of the category (any order)
//   "repeat red egg cat :"    "red egg cat"            the words as given
//   "reverse red egg cat :"   "cat egg red"            the words in reverse order
//   "upper red egg cat :"     "RED EGG CAT"            the words in upper case
//
// Every prompt ends with the separator word ":", an ordinary vocabulary word, so that a service encoding the prompt
// text with Tokenizer::EncodeOrdinary gets the whole prompt, separator included, with no special case: the response
// starts right after it. There is no BOS in a prompt. A response is words separated by spaces, finished by the EOS
// token, which is not part of the response text (SFT demonstrations and comparison files hold the text; the trainer
// appends EOS).
//
// The score is -(number of errors):
//   - list: |length - N| + one per word outside the category + one per repeated word;
//   - repeat, reverse, upper: the word-level edit distance (Levenshtein) to the one right answer;
//   - and kUnfinishedPenalty more when the response never emitted EOS.
// So 0 is a perfect answer and every error costs 1.
#ifndef RLHF_COMMON_TASK_INSTRUCTIONS_H_
#define RLHF_COMMON_TASK_INSTRUCTIONS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/tokenizer/word_tokenizer.h"

namespace rlhf::task {

enum class Family { kList, kRepeat, kReverse, kUpper };
inline constexpr Family kAllFamilies[] = {Family::kList, Family::kRepeat, Family::kReverse, Family::kUpper};

// "list", "repeat", "reverse", "upper": the instruction word of the family.
absl::string_view FamilyName(Family family);

// The special tokens of the task's vocabulary and the word that ends every prompt.
inline constexpr char kPadToken[] = "<pad>";
inline constexpr char kBosToken[] = "<bos>";
inline constexpr char kEosToken[] = "<eos>";
inline constexpr char kUnkToken[] = "<unk>";
inline constexpr char kSeparator[] = ":";

// Sizes: `list` asks for 1..5 words; `repeat`, `reverse` and `upper` take 2..5 words.
inline constexpr int32_t kMinListCount = 1;
inline constexpr int32_t kMaxListCount = 5;
inline constexpr int32_t kMinInputWords = 2;
inline constexpr int32_t kMaxInputWords = 5;

// What a response that never emits EOS loses, on top of its errors.
inline constexpr int32_t kUnfinishedPenalty = 2;

// A category of `list`: its name (a word of the prompt) and its eight lower-case words.
struct Category {
  std::string name;
  std::vector<std::string> words;
};

// The three categories (animal, color, food), in a fixed order. Their 24 words are distinct, and they and their
// upper-case forms are the content words of the task.
const std::vector<Category>& Categories();

// All 24 lower-case content words, category by category.
const std::vector<std::string>& LowerWords();

// "cat" -> "CAT" (ASCII).
std::string ToUpperWord(absl::string_view word);

// The task's vocabulary in id order: <pad> <bos> <eos> <unk>, the separator, the four instruction words, the digits
// 1-5, the category names, the 24 words and their 24 upper-case forms (65 words).
std::vector<std::string> TaskVocabulary();

// The word tokenizer of the task's vocabulary (specials <pad> <bos> <eos> <unk>; ":" is an ordinary word).
std::unique_ptr<tokenizer::WordTokenizer> MakeTaskTokenizer();

// One instruction.
struct Instruction {
  Family family = Family::kList;
  int32_t count = 0;               // list: how many words (kMinListCount..kMaxListCount); otherwise 0
  int32_t category = -1;           // list: index into Categories(); otherwise -1
  std::vector<std::string> words;  // repeat/reverse/upper: the input words (lower case); list: empty
};

// The prompt text: "list 3 animal :", "reverse red egg cat :".
std::string FormatPrompt(const Instruction& instruction);

// Parses a prompt in FormatPrompt's form (whitespace between words may be any ASCII whitespace). InvalidArgument
// naming the prompt and what is wrong when it is not an instruction of this task.
absl::StatusOr<Instruction> ParsePrompt(absl::string_view prompt);

// The right answer of repeat/reverse/upper; for list, the first `count` words of the category (one right answer of
// many).
std::vector<std::string> ReferenceAnswer(const Instruction& instruction);

// A response as the scorer sees it: its words, and whether it ended with EOS.
struct Response {
  std::vector<std::string> words;
  bool finished = true;
};

// How response text is written.
enum class ResponseForm {
  // The text of a finished response, without EOS: SFT demonstrations, comparison files, Score requests. Always
  // finished.
  kFinishedText,
  // Generated tokens decoded with their special tokens (Tokenizer::Decode of Completion.token_ids, which is what
  // the generation service returns as Completion.text for this tokenizer): the response is finished when the text
  // contains "<eos>", and only the words before it count.
  kGeneratedText,
};

Response ParseResponse(absl::string_view text, ResponseForm form);

// The errors of `words` as an answer to `instruction`, EOS aside (see the header comment).
int32_t CountErrors(const Instruction& instruction, absl::Span<const std::string> words);

// -(CountErrors + kUnfinishedPenalty if the response is unfinished). 0 is perfect.
int32_t ScoreResponse(const Instruction& instruction, const Response& response);

// ScoreResponse of text: InvalidArgument when `prompt` is not a task prompt (see ParsePrompt).
absl::StatusOr<int32_t> TrueScore(absl::string_view prompt, absl::string_view response,
                                  ResponseForm form = ResponseForm::kFinishedText);

// TrueScore(...) == 0.
absl::StatusOr<bool> IsPerfect(absl::string_view prompt, absl::string_view response,
                               ResponseForm form = ResponseForm::kFinishedText);

// Word-level Levenshtein distance (insertions, deletions and substitutions cost 1).
int32_t EditDistance(absl::Span<const std::string> a, absl::Span<const std::string> b);

}  // namespace rlhf::task

#endif  // RLHF_COMMON_TASK_INSTRUCTIONS_H_
