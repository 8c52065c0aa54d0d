#include "common/task/builtin_task.h"

#include <map>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "common/data/jsonl_reader.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/common/task/test_dir.h"

namespace rlhf::task {
namespace {

using ::testing::HasSubstr;

BuiltinTaskOptions SmallOptions(uint64_t seed) {
  BuiltinTaskOptions options;
  options.seed = seed;
  options.num_demonstrations = 600;
  options.num_rm_prompts = 300;
  options.num_ppo_prompts = 400;
  options.num_eval_prompts = 200;
  options.num_pretraining_texts = 500;
  return options;
}

const BuiltinTask& DefaultTask() {
  static const BuiltinTask* const task = [] {
    absl::StatusOr<BuiltinTask> generated = GenerateBuiltinTask(BuiltinTaskOptions{});
    EXPECT_TRUE(generated.ok()) << generated.status();
    return new BuiltinTask(*std::move(generated));
  }();
  return *task;
}

TEST(GenerateBuiltinTask, MakesTheDefaultSizes) {
  const BuiltinTask& task = DefaultTask();
  EXPECT_EQ(task.demonstrations.size(), 8000u);
  EXPECT_EQ(task.rm_prompts.size(), 6000u);
  EXPECT_EQ(task.ppo_prompts.size(), 9600u);
  EXPECT_EQ(task.eval_prompts.size(), 2000u);
  EXPECT_EQ(task.pretraining_texts.size(), 20000u);
}

TEST(GenerateBuiltinTask, UncorruptedDemonstrationsArePerfectAndCorruptedOnesAreNot) {
  const BuiltinTask& task = DefaultTask();
  std::map<Corruption, int> by_kind;
  for (const Demonstration& d : task.demonstrations) {
    ++by_kind[d.corruption];
    const absl::StatusOr<int32_t> score = TrueScore(d.prompt, d.response);
    ASSERT_TRUE(score.ok()) << score.status();
    if (d.corruption == Corruption::kNone) {
      EXPECT_EQ(*score, 0) << d.prompt << " -> " << d.response;
    } else {
      EXPECT_LT(*score, 0) << d.prompt << " -> " << d.response << " (" << CorruptionName(d.corruption) << ")";
      // At worst two extra words, each a repeated list word (too long and a repeat): 4 errors.
      EXPECT_GE(*score, -4) << d.prompt << " -> " << d.response;
    }
    EXPECT_FALSE(d.response.empty()) << d.prompt;
  }
  // 8000 draws at 0.3: the standard deviation of the rate is 0.005.
  const double rate = 1.0 - static_cast<double>(by_kind[Corruption::kNone]) / 8000.0;
  EXPECT_NEAR(rate, 0.3, 0.02);
  EXPECT_GT(by_kind[Corruption::kExtraWords], 500);
  EXPECT_GT(by_kind[Corruption::kDroppedWord], 500);
  EXPECT_GT(by_kind[Corruption::kSubstitutedWord], 500);
}

TEST(GenerateBuiltinTask, TheCorruptionRateFollowsTheOption) {
  for (const double rate : {0.0, 0.1, 1.0}) {
    BuiltinTaskOptions options = SmallOptions(3);
    options.num_demonstrations = 4000;
    options.corruption_rate = rate;
    absl::StatusOr<BuiltinTask> task = GenerateBuiltinTask(options);
    ASSERT_TRUE(task.ok()) << task.status();
    int corrupted = 0;
    for (const Demonstration& d : task->demonstrations) corrupted += d.corruption != Corruption::kNone;
    EXPECT_NEAR(corrupted / 4000.0, rate, 0.025) << rate;
  }
}

TEST(GenerateBuiltinTask, FamiliesAreEquallyLikelyAndEveryWordIsInTheVocabulary) {
  const BuiltinTask& task = DefaultTask();
  const std::unique_ptr<tokenizer::WordTokenizer> tokenizer = MakeTaskTokenizer();
  std::map<Family, int> families;
  size_t longest_prompt = 0;
  for (const std::vector<std::string>* prompts : {&task.rm_prompts, &task.ppo_prompts, &task.eval_prompts}) {
    for (const std::string& prompt : *prompts) {
      const absl::StatusOr<Instruction> instruction = ParsePrompt(prompt);
      ASSERT_TRUE(instruction.ok()) << instruction.status();
      ++families[instruction->family];
      const std::vector<int32_t> ids = *tokenizer->EncodeOrdinary(prompt);
      longest_prompt = std::max(longest_prompt, ids.size());
      for (const int32_t id : ids) ASSERT_NE(id, tokenizer->UnkId()) << prompt;
    }
  }
  for (const Family family : kAllFamilies) EXPECT_NEAR(families[family] / 17600.0, 0.25, 0.02);
  EXPECT_LE(longest_prompt, 7u);
  for (const Demonstration& d : task.demonstrations) {
    const std::vector<int32_t> ids = *tokenizer->EncodeOrdinary(d.response);
    for (const int32_t id : ids) ASSERT_NE(id, tokenizer->UnkId()) << d.response;
  }
  for (const std::string& text : task.pretraining_texts) {
    const std::vector<int32_t> ids = *tokenizer->EncodeOrdinary(text);
    for (const int32_t id : ids) ASSERT_NE(id, tokenizer->UnkId()) << text;
  }
}

TEST(GenerateBuiltinTask, HeldOutPromptsAreNotTrainedOn) {
  const BuiltinTask& task = DefaultTask();
  absl::flat_hash_set<std::string> training;
  for (const Demonstration& d : task.demonstrations) training.insert(d.prompt);
  training.insert(task.rm_prompts.begin(), task.rm_prompts.end());
  training.insert(task.ppo_prompts.begin(), task.ppo_prompts.end());
  int held_out = 0;
  for (const std::string& prompt : task.eval_prompts) {
    if (ParsePrompt(prompt)->family == Family::kList) continue;  // only 15 list prompts exist; they are shared
    ++held_out;
    EXPECT_FALSE(training.contains(prompt)) << prompt;
  }
  EXPECT_GT(held_out, 1300);
}

TEST(GenerateBuiltinTask, EachListDependsOnlyOnTheSeedAndItsOwnCount) {
  BuiltinTaskOptions options = SmallOptions(9);
  const BuiltinTask a = *GenerateBuiltinTask(options);
  options.num_demonstrations = 50;
  options.num_rm_prompts = 0;
  const BuiltinTask b = *GenerateBuiltinTask(options);
  EXPECT_EQ(a.eval_prompts, b.eval_prompts);
  EXPECT_EQ(a.ppo_prompts, b.ppo_prompts);
  EXPECT_EQ(a.pretraining_texts, b.pretraining_texts);
  EXPECT_EQ(a.demonstrations[49].response, b.demonstrations[49].response);
  EXPECT_TRUE(b.rm_prompts.empty());
  options.seed = 10;
  EXPECT_NE(GenerateBuiltinTask(options)->eval_prompts, a.eval_prompts);
}

TEST(WriteBuiltinTask, WritesFilesTheDataReadersAccept) {
  const std::string dir = testing::MakeTempDir() + "/task";
  const BuiltinTaskOptions options = SmallOptions(5);
  absl::StatusOr<BuiltinTaskFiles> files = WriteBuiltinTask(dir, options);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->demonstrations, dir + "/sft.jsonl");

  absl::StatusOr<data::SftReadResult> sft = data::ReadSftExamples(files->demonstrations);
  ASSERT_TRUE(sft.ok()) << sft.status();
  ASSERT_EQ(sft->records.size(), 600u);
  const BuiltinTask task = *GenerateBuiltinTask(options);
  EXPECT_EQ(sft->records[17].prompt, task.demonstrations[17].prompt);
  EXPECT_EQ(sft->records[17].response, task.demonstrations[17].response);
  EXPECT_EQ(data::ReadPrompts(files->rm_prompts)->records.size(), 300u);
  EXPECT_EQ(data::ReadPrompts(files->ppo_prompts)->records.size(), 400u);
  absl::StatusOr<data::PromptReadResult> eval = data::ReadPrompts(files->eval_prompts);
  ASSERT_TRUE(eval.ok()) << eval.status();
  ASSERT_EQ(eval->records.size(), 200u);
  EXPECT_EQ(eval->records[0].prompt, task.eval_prompts[0]);
  absl::StatusOr<data::PretrainingReadResult> texts = data::ReadPretrainingTexts(files->pretraining);
  ASSERT_TRUE(texts.ok()) << texts.status();
  EXPECT_EQ(texts->records.size(), 500u);

  absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> tokenizer = tokenizer::LoadTokenizer(dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->Kind(), "word");
  EXPECT_EQ((*tokenizer)->VocabSize(), 65);

  const nlohmann::json info = nlohmann::json::parse(*util::ReadFile(files->task_json));
  EXPECT_EQ(info["seed"], 5);
  EXPECT_EQ(info["vocab_size"], 65);
  EXPECT_EQ(info["separator"], ":");
  EXPECT_EQ(info["counts"]["demonstrations"], 600);
  EXPECT_EQ(info["counts"]["eval_prompts"], 200);
  int corrupted = 0;
  for (const Demonstration& d : task.demonstrations) corrupted += d.corruption != Corruption::kNone;
  EXPECT_EQ(info["counts"]["corrupted_demonstrations"], corrupted);
  EXPECT_EQ(info["corruptions"]["extra_words"].get<int>() + info["corruptions"]["dropped_word"].get<int>() +
                info["corruptions"]["substituted_word"].get<int>(),
            corrupted);
  EXPECT_LE(info["max_prompt_tokens"].get<int>(), 7);
  EXPECT_LE(info["max_response_tokens"].get<int>(), 8);
  EXPECT_EQ(info["max_answer_tokens"], 6);
  EXPECT_EQ(info["files"]["demonstrations"], "sft.jsonl");
}

TEST(WriteBuiltinTask, TheSameSeedGivesByteIdenticalFiles) {
  const std::string root = testing::MakeTempDir();
  ASSERT_TRUE(WriteBuiltinTask(root + "/a", SmallOptions(21)).ok());
  ASSERT_TRUE(WriteBuiltinTask(root + "/b", SmallOptions(21)).ok());
  ASSERT_TRUE(WriteBuiltinTask(root + "/c", SmallOptions(22)).ok());
  for (const char* name : {"tokenizer.json", "sft.jsonl", "rm_prompts.jsonl", "ppo_prompts.jsonl", "eval_prompts.jsonl",
                           "pretrain.jsonl", "task.json"}) {
    const std::string a = *util::ReadFile(root + "/a/" + name);
    EXPECT_FALSE(a.empty()) << name;
    EXPECT_EQ(a, *util::ReadFile(root + "/b/" + name)) << name;
    if (std::string(name) != "tokenizer.json") {
      EXPECT_NE(a, *util::ReadFile(root + "/c/" + name)) << name;
    }
  }
}

TEST(WriteBuiltinTask, RejectsBadOptionsNamingTheField) {
  const std::string dir = testing::MakeTempDir();
  BuiltinTaskOptions options;
  options.num_demonstrations = 0;
  absl::Status status = WriteBuiltinTask(dir, options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "num_demonstrations=0 is outside [1, 10000000]");
  options = BuiltinTaskOptions{};
  options.num_ppo_prompts = -1;
  EXPECT_EQ(ValidateBuiltinTaskOptions(options).message(), "num_ppo_prompts=-1 is outside [0, 10000000]");
  options = BuiltinTaskOptions{};
  options.corruption_rate = 1.5;
  EXPECT_EQ(ValidateBuiltinTaskOptions(options).message(), "corruption_rate=1.5 is outside [0, 1]");
  EXPECT_FALSE(util::ReadFile(dir + "/task.json").ok());
}

TEST(WriteBuiltinTask, NamesThePathItCannotWrite) {
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/file", "x").ok());
  const absl::Status status = WriteBuiltinTask(dir + "/file/task", SmallOptions(1)).status();
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr(dir + "/file"));
}

}  // namespace
}  // namespace rlhf::task
