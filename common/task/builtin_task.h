// The data of the built-in task (instructions.h), generated from a seed: demonstrations for SFT (some of them
// imperfect, so that SFT is not already perfect), prompts for reward-model comparisons and for PPO, held-out
// evaluation prompts, a plain-text pretraining corpus and the tokenizer.
//
// WriteBuiltinTask writes, into one folder (common/data's readers read every .jsonl file):
//   tokenizer.json      the word tokenizer (WordTokenizer, "type": "word"; 65 tokens)
//   sft.jsonl           {"prompt", "response"}: demonstrations; the response text has no EOS (the trainer adds it)
//   rm_prompts.jsonl    {"prompt"}: prompts to sample and rank responses for, for reward-model training
//   ppo_prompts.jsonl   {"prompt"}: prompts for PPO rollouts
//   eval_prompts.jsonl  {"prompt"}: held-out prompts to compare policies on
//   pretrain.jsonl      {"text"}: the pretraining corpus (and the PPO-ptx mix)
//   task.json           what was generated: seed, options, counts, longest prompt and response in tokens
// The same options give byte-identical files on every run and platform.
//
// Held-out prompts: no repeat/reverse/upper prompt of eval_prompts.jsonl appears in the other files. `list` has
// only 15 prompts ("list <1-5> <category> :") with many right answers each, so those are shared by all files.
#ifndef RLHF_COMMON_TASK_BUILTIN_TASK_H_
#define RLHF_COMMON_TASK_BUILTIN_TASK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/task/instructions.h"

namespace rlhf::task {

struct BuiltinTaskOptions {
  uint64_t seed = 1;
  int32_t num_demonstrations = 8000;
  int32_t num_rm_prompts = 6000;
  int32_t num_ppo_prompts = 9600;
  int32_t num_eval_prompts = 2000;
  int32_t num_pretraining_texts = 20000;
  // Probability that a demonstration gets one corruption (an extra word or two, a dropped word or a substituted
  // word), in [0, 1].
  double corruption_rate = 0.3;
};

// Counts may be 0 (rm/ppo/pretraining) or must be >= 1 (demonstrations, eval prompts), all <= 10,000,000;
// corruption_rate in [0, 1]. InvalidArgument naming the field otherwise.
absl::Status ValidateBuiltinTaskOptions(const BuiltinTaskOptions& options);

// What was done to a demonstration's right answer.
enum class Corruption { kNone, kExtraWords, kDroppedWord, kSubstitutedWord };
absl::string_view CorruptionName(Corruption corruption);  // "none", "extra_words", "dropped_word", "substituted_word"

struct Demonstration {
  std::string prompt;
  std::string response;  // finished response text, no EOS
  Corruption corruption = Corruption::kNone;
};

// Everything the task generates, in file order.
struct BuiltinTask {
  BuiltinTaskOptions options;
  // Uncorrupted ones score 0 (TrueScore), corrupted ones < 0.
  std::vector<Demonstration> demonstrations;
  std::vector<std::string> rm_prompts;
  std::vector<std::string> ppo_prompts;
  std::vector<std::string> eval_prompts;
  std::vector<std::string> pretraining_texts;
};

// Generates the task. Each list is drawn from its own random stream of the seed, so changing one count does not
// change the other lists (the held-out prompts are drawn first; the others avoid them). Families are equally
// likely; list counts and input lengths are uniform over their ranges.
absl::StatusOr<BuiltinTask> GenerateBuiltinTask(const BuiltinTaskOptions& options);

// The files of a task folder (see the header comment).
struct BuiltinTaskFiles {
  std::string dir;
  std::string tokenizer;       // dir/tokenizer.json
  std::string demonstrations;  // dir/sft.jsonl
  std::string rm_prompts;      // dir/rm_prompts.jsonl
  std::string ppo_prompts;     // dir/ppo_prompts.jsonl
  std::string eval_prompts;    // dir/eval_prompts.jsonl
  std::string pretraining;     // dir/pretrain.jsonl
  std::string task_json;       // dir/task.json
};
BuiltinTaskFiles BuiltinTaskFilesIn(const std::string& dir);

// Generates the task and writes its files into `dir` (created if missing; existing files are replaced, each
// atomically). InvalidArgument for bad options; file system errors name the path.
absl::StatusOr<BuiltinTaskFiles> WriteBuiltinTask(const std::string& dir, const BuiltinTaskOptions& options = {});

// The task.json text of a generated task.
std::string TaskJson(const BuiltinTask& task);

}  // namespace rlhf::task

#endif  // RLHF_COMMON_TASK_BUILTIN_TASK_H_
