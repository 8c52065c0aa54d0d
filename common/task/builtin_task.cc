#include "common/task/builtin_task.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/data/jsonl_writer.h"
#include "common/data/records.h"
#include "common/task/rng.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace rlhf::task {
namespace {

using internal::MixSeed;
using internal::Rng;

constexpr int32_t kMaxCount = 10'000'000;
constexpr int kTaskJsonVersion = 1;

// One random stream per list, so that the lists do not depend on each other's sizes.
enum Stream : uint64_t {
  kEvalStream = 1,
  kDemonstrationStream = 2,
  kRmStream = 3,
  kPpoStream = 4,
  kPretrainingStream = 5,
};

Instruction RandomInstruction(Rng& rng) {
  Instruction instruction;
  instruction.family = kAllFamilies[rng.Uniform(std::size(kAllFamilies))];
  if (instruction.family == Family::kList) {
    instruction.count = rng.UniformInt(kMinListCount, kMaxListCount);
    instruction.category = static_cast<int32_t>(rng.Uniform(Categories().size()));
    return instruction;
  }
  const std::vector<std::string>& words = LowerWords();
  const int32_t n = rng.UniformInt(kMinInputWords, kMaxInputWords);
  for (const int32_t i : rng.Sample(static_cast<int32_t>(words.size()), n)) {
    instruction.words.push_back(words[static_cast<size_t>(i)]);
  }
  return instruction;
}

// A random instruction whose prompt is not held out (list prompts cannot be held out; see the header).
Instruction TrainingInstruction(Rng& rng, const absl::flat_hash_set<std::string>& held_out) {
  while (true) {
    Instruction instruction = RandomInstruction(rng);
    if (instruction.family == Family::kList || !held_out.contains(FormatPrompt(instruction))) return instruction;
  }
}

// A right answer: for list, `count` distinct words of the category in random order.
std::vector<std::string> RandomRightAnswer(const Instruction& instruction, Rng& rng) {
  if (instruction.family != Family::kList) return ReferenceAnswer(instruction);
  const std::vector<std::string>& words = Categories()[static_cast<size_t>(instruction.category)].words;
  std::vector<std::string> answer;
  for (const int32_t i : rng.Sample(static_cast<int32_t>(words.size()), instruction.count)) {
    answer.push_back(words[static_cast<size_t>(i)]);
  }
  return answer;
}

const std::string& Pick(const std::vector<std::string>& words, Rng& rng) { return words[rng.Uniform(words.size())]; }

std::vector<std::string> UpperWords() {
  std::vector<std::string> out;
  for (const std::string& word : LowerWords()) out.push_back(ToUpperWord(word));
  return out;
}

// Words a slip of the pen inserts into an answer: for list, words of the category (an extra or a repeated one);
// for upper, upper-case words; otherwise lower-case words.
const std::vector<std::string>& ExtraWordPool(const Instruction& instruction) {
  static const std::vector<std::string>* const upper = new std::vector<std::string>(UpperWords());
  switch (instruction.family) {
    case Family::kList:
      return Categories()[static_cast<size_t>(instruction.category)].words;
    case Family::kUpper:
      return *upper;
    default:
      return LowerWords();
  }
}

// A wrong word in place of answer[pos]: for list, a word of another category; for upper, the word left in lower
// case half of the time, another upper-case word otherwise; for repeat/reverse, another word.
std::string SubstituteWord(const Instruction& instruction, const std::string& right, Rng& rng) {
  if (instruction.family == Family::kList) {
    std::vector<std::string> others;
    for (size_t c = 0; c < Categories().size(); ++c) {
      if (static_cast<int32_t>(c) == instruction.category) continue;
      others.insert(others.end(), Categories()[c].words.begin(), Categories()[c].words.end());
    }
    return Pick(others, rng);
  }
  if (instruction.family == Family::kUpper && rng.Bernoulli(0.5)) {
    return absl::AsciiStrToLower(right);
  }
  const std::vector<std::string>& pool = ExtraWordPool(instruction);
  while (true) {
    const std::string& word = Pick(pool, rng);
    if (word != right) return word;
  }
}

// Applies one corruption to `answer` (a right answer, non-empty) and says which.
Corruption Corrupt(const Instruction& instruction, Rng& rng, std::vector<std::string>& answer) {
  std::vector<Corruption> kinds = {Corruption::kExtraWords, Corruption::kSubstitutedWord};
  if (answer.size() >= 2) kinds.push_back(Corruption::kDroppedWord);  // a demonstration is never empty
  const Corruption kind = kinds[rng.Uniform(kinds.size())];
  switch (kind) {
    case Corruption::kExtraWords: {
      const int32_t extra = rng.UniformInt(1, 2);
      for (int32_t i = 0; i < extra; ++i) {
        const size_t at = rng.Uniform(answer.size() + 1);
        answer.insert(answer.begin() + static_cast<std::ptrdiff_t>(at), Pick(ExtraWordPool(instruction), rng));
      }
      break;
    }
    case Corruption::kDroppedWord:
      answer.erase(answer.begin() + static_cast<std::ptrdiff_t>(rng.Uniform(answer.size())));
      break;
    case Corruption::kSubstitutedWord: {
      const size_t at = rng.Uniform(answer.size());
      answer[at] = SubstituteWord(instruction, answer[at], rng);
      break;
    }
    case Corruption::kNone:
      break;
  }
  return kind;
}

absl::StatusOr<Demonstration> MakeDemonstration(const Instruction& instruction, double corruption_rate, Rng& rng) {
  std::vector<std::string> answer = RandomRightAnswer(instruction, rng);
  Demonstration demonstration;
  demonstration.prompt = FormatPrompt(instruction);
  if (rng.Bernoulli(corruption_rate)) demonstration.corruption = Corrupt(instruction, rng, answer);
  const int32_t score = ScoreResponse(instruction, Response{answer, true});
  if ((demonstration.corruption == Corruption::kNone) != (score == 0)) {
    return absl::InternalError(absl::StrCat("demonstration \"", demonstration.prompt, "\" -> \"",
                                            absl::StrJoin(answer, " "), "\" (",
                                            CorruptionName(demonstration.corruption), ") scores ", score));
  }
  demonstration.response = absl::StrJoin(answer, " ");
  return demonstration;
}

// One document of the pretraining corpus: facts of the task's little world, without the instruction format.
//   "animal : owl cat hen"   words of a category after its name (1..8 of them)
//   "red RED egg EGG"        words next to their upper-case forms (1..4 pairs)
//   "3 : cow tea gold"       a count and that many words (1..5)
std::string PretrainingText(Rng& rng) {
  const std::vector<std::string>& lower = LowerWords();
  std::vector<std::string> words;
  switch (rng.Uniform(3)) {
    case 0: {
      const Category& category = Categories()[rng.Uniform(Categories().size())];
      words = {category.name, kSeparator};
      const int32_t n = rng.UniformInt(1, static_cast<int32_t>(category.words.size()));
      for (const int32_t i : rng.Sample(static_cast<int32_t>(category.words.size()), n)) {
        words.push_back(category.words[static_cast<size_t>(i)]);
      }
      break;
    }
    case 1: {
      for (const int32_t i : rng.Sample(static_cast<int32_t>(lower.size()), rng.UniformInt(1, 4))) {
        words.push_back(lower[static_cast<size_t>(i)]);
        words.push_back(ToUpperWord(lower[static_cast<size_t>(i)]));
      }
      break;
    }
    default: {
      const int32_t n = rng.UniformInt(1, kMaxListCount);
      words = {absl::StrCat(n), kSeparator};
      for (const int32_t i : rng.Sample(static_cast<int32_t>(lower.size()), n)) {
        words.push_back(lower[static_cast<size_t>(i)]);
      }
      break;
    }
  }
  return absl::StrJoin(words, " ");
}

size_t CountWords(const std::string& text) { return ParseResponse(text, ResponseForm::kFinishedText).words.size(); }

absl::Status CheckCount(int32_t value, int32_t min, const char* field) {
  if (value < min || value > kMaxCount) {
    return absl::InvalidArgumentError(absl::StrCat(field, "=", value, " is outside [", min, ", ", kMaxCount, "]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view CorruptionName(Corruption corruption) {
  switch (corruption) {
    case Corruption::kNone:
      return "none";
    case Corruption::kExtraWords:
      return "extra_words";
    case Corruption::kDroppedWord:
      return "dropped_word";
    case Corruption::kSubstitutedWord:
      return "substituted_word";
  }
  return "unknown";
}

absl::Status ValidateBuiltinTaskOptions(const BuiltinTaskOptions& options) {
  RETURN_IF_ERROR(CheckCount(options.num_demonstrations, 1, "num_demonstrations"));
  RETURN_IF_ERROR(CheckCount(options.num_rm_prompts, 0, "num_rm_prompts"));
  RETURN_IF_ERROR(CheckCount(options.num_ppo_prompts, 0, "num_ppo_prompts"));
  RETURN_IF_ERROR(CheckCount(options.num_eval_prompts, 1, "num_eval_prompts"));
  RETURN_IF_ERROR(CheckCount(options.num_pretraining_texts, 0, "num_pretraining_texts"));
  if (!(options.corruption_rate >= 0.0 && options.corruption_rate <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("corruption_rate=", options.corruption_rate, " is outside [0, 1]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<BuiltinTask> GenerateBuiltinTask(const BuiltinTaskOptions& options) {
  RETURN_IF_ERROR(ValidateBuiltinTaskOptions(options));
  BuiltinTask task;
  task.options = options;

  Rng eval_rng(MixSeed({options.seed, kEvalStream}));
  absl::flat_hash_set<std::string> held_out;
  for (int32_t i = 0; i < options.num_eval_prompts; ++i) {
    const Instruction instruction = RandomInstruction(eval_rng);
    task.eval_prompts.push_back(FormatPrompt(instruction));
    if (instruction.family != Family::kList) held_out.insert(task.eval_prompts.back());
  }

  Rng demonstration_rng(MixSeed({options.seed, kDemonstrationStream}));
  for (int32_t i = 0; i < options.num_demonstrations; ++i) {
    const Instruction instruction = TrainingInstruction(demonstration_rng, held_out);
    ASSIGN_OR_RETURN(Demonstration demonstration,
                     MakeDemonstration(instruction, options.corruption_rate, demonstration_rng));
    task.demonstrations.push_back(std::move(demonstration));
  }

  Rng rm_rng(MixSeed({options.seed, kRmStream}));
  for (int32_t i = 0; i < options.num_rm_prompts; ++i) {
    task.rm_prompts.push_back(FormatPrompt(TrainingInstruction(rm_rng, held_out)));
  }
  Rng ppo_rng(MixSeed({options.seed, kPpoStream}));
  for (int32_t i = 0; i < options.num_ppo_prompts; ++i) {
    task.ppo_prompts.push_back(FormatPrompt(TrainingInstruction(ppo_rng, held_out)));
  }
  Rng pretraining_rng(MixSeed({options.seed, kPretrainingStream}));
  for (int32_t i = 0; i < options.num_pretraining_texts; ++i) {
    task.pretraining_texts.push_back(PretrainingText(pretraining_rng));
  }
  return task;
}

BuiltinTaskFiles BuiltinTaskFilesIn(const std::string& dir) {
  BuiltinTaskFiles files;
  files.dir = dir;
  files.tokenizer = dir + "/tokenizer.json";
  files.demonstrations = dir + "/sft.jsonl";
  files.rm_prompts = dir + "/rm_prompts.jsonl";
  files.ppo_prompts = dir + "/ppo_prompts.jsonl";
  files.eval_prompts = dir + "/eval_prompts.jsonl";
  files.pretraining = dir + "/pretrain.jsonl";
  files.task_json = dir + "/task.json";
  return files;
}

std::string TaskJson(const BuiltinTask& task) {
  const BuiltinTaskOptions& o = task.options;
  nlohmann::ordered_json json;
  json["task"] = "instructions";
  json["version"] = kTaskJsonVersion;
  json["seed"] = o.seed;
  json["families"] = nlohmann::ordered_json::array();
  for (const Family family : kAllFamilies) json["families"].push_back(std::string(FamilyName(family)));
  json["separator"] = kSeparator;
  json["unfinished_penalty"] = kUnfinishedPenalty;
  json["vocab_size"] = TaskVocabulary().size();
  json["corruption_rate"] = o.corruption_rate;

  int64_t by_kind[4] = {0, 0, 0, 0};  // indexed by Corruption
  size_t max_prompt_words = 0;
  size_t max_response_words = 0;
  for (const Demonstration& d : task.demonstrations) {
    ++by_kind[static_cast<int>(d.corruption)];
    max_prompt_words = std::max(max_prompt_words, CountWords(d.prompt));
    max_response_words = std::max(max_response_words, CountWords(d.response));
  }
  for (const std::vector<std::string>* prompts : {&task.rm_prompts, &task.ppo_prompts, &task.eval_prompts}) {
    for (const std::string& prompt : *prompts) max_prompt_words = std::max(max_prompt_words, CountWords(prompt));
  }
  size_t max_text_words = 0;
  for (const std::string& text : task.pretraining_texts) max_text_words = std::max(max_text_words, CountWords(text));

  json["counts"] = {{"demonstrations", task.demonstrations.size()},
                    {"corrupted_demonstrations",
                     static_cast<int64_t>(task.demonstrations.size()) - by_kind[static_cast<int>(Corruption::kNone)]},
                    {"rm_prompts", task.rm_prompts.size()},
                    {"ppo_prompts", task.ppo_prompts.size()},
                    {"eval_prompts", task.eval_prompts.size()},
                    {"pretraining_texts", task.pretraining_texts.size()}};
  nlohmann::ordered_json& corruptions = json["corruptions"];
  for (const Corruption kind : {Corruption::kExtraWords, Corruption::kDroppedWord, Corruption::kSubstitutedWord}) {
    corruptions[std::string(CorruptionName(kind))] = by_kind[static_cast<int>(kind)];
  }
  // Lengths in tokens of the word tokenizer; responses and texts with their EOS.
  json["max_prompt_tokens"] = max_prompt_words;
  json["max_response_tokens"] = max_response_words + 1;
  json["max_answer_tokens"] = std::max(kMaxListCount, kMaxInputWords) + 1;
  json["max_pretraining_text_tokens"] = max_text_words + 1;
  json["files"] = {{"tokenizer", "tokenizer.json"},        {"demonstrations", "sft.jsonl"},
                   {"rm_prompts", "rm_prompts.jsonl"},     {"ppo_prompts", "ppo_prompts.jsonl"},
                   {"eval_prompts", "eval_prompts.jsonl"}, {"pretraining", "pretrain.jsonl"}};
  return json.dump(2) + "\n";
}

absl::StatusOr<BuiltinTaskFiles> WriteBuiltinTask(const std::string& dir, const BuiltinTaskOptions& options) {
  ASSIGN_OR_RETURN(const BuiltinTask task, GenerateBuiltinTask(options));
  RETURN_IF_ERROR(util::MakeDirectories(dir));
  const BuiltinTaskFiles files = BuiltinTaskFilesIn(dir);
  RETURN_IF_ERROR(MakeTaskTokenizer()->Save(files.tokenizer));

  std::vector<data::SftExample> demonstrations;
  demonstrations.reserve(task.demonstrations.size());
  for (const Demonstration& d : task.demonstrations) demonstrations.push_back({d.prompt, d.response});
  RETURN_IF_ERROR(data::WriteSftExamples(files.demonstrations, demonstrations));

  const auto write_prompts = [](const std::string& path, const std::vector<std::string>& prompts) {
    std::vector<data::PromptRecord> records;
    records.reserve(prompts.size());
    for (const std::string& prompt : prompts) records.push_back({prompt});
    return data::WritePrompts(path, records);
  };
  RETURN_IF_ERROR(write_prompts(files.rm_prompts, task.rm_prompts));
  RETURN_IF_ERROR(write_prompts(files.ppo_prompts, task.ppo_prompts));
  RETURN_IF_ERROR(write_prompts(files.eval_prompts, task.eval_prompts));

  std::vector<data::PretrainingText> texts;
  texts.reserve(task.pretraining_texts.size());
  for (const std::string& text : task.pretraining_texts) texts.push_back({text});
  RETURN_IF_ERROR(data::WritePretrainingTexts(files.pretraining, texts));

  // task.json last: its presence says the folder is complete.
  RETURN_IF_ERROR(util::WriteFileAtomically(files.task_json, TaskJson(task)));
  return files;
}

}  // namespace rlhf::task
