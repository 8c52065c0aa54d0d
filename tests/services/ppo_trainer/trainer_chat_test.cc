// The trainer on chat data: SFT demonstrations and comparisons whose prompts are conversations ({"messages": ...}),
// rendered with the policy's chat template (the real Qwen3 tokenizer and template, RLHF_DATA_DIR/qwen3), and the
// refusal of chat data for a policy without a template. Suite names contain Qwen for `ctest -R Qwen`.
#include <stdlib.h>

#include <string>

#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/ppo_trainer/trainer_engine.h"
#include "tests/testing/test_util.h"
#include "tests/testing/tiny_model.h"

namespace rlhf::trainer {
namespace {

using ::testing::HasSubstr;

std::string Qwen3TokenizerDir() {
  const char* value = ::getenv("RLHF_DATA_DIR");
  return std::string(value != nullptr && *value != '\0' ? value : RLHF_TEST_DEFAULT_DATA_DIR) + "/qwen3";
}

constexpr char kChatSft[] =
    R"({"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"2+2?"},)"
    R"({"role":"assistant","content":"4"}]})"
    "\n"
    R"({"messages":[{"role":"user","content":"Name a colour."}],"response":"Blue."})"
    "\n";

constexpr char kChatComparisons[] =
    R"({"messages":[{"role":"user","content":"2+2?"}],"chosen":"4","rejected":"5"})"
    "\n"
    R"({"messages":[{"role":"user","content":"Name a colour."}],"chosen":"Blue.","rejected":"A chair."})"
    "\n";

std::unique_ptr<TrainerEngine> Engine(const std::string& root, const std::string& model_dir) {
  TrainerEngineOptions options;
  options.model_dir = model_dir;
  options.checkpoint_root = root + "/checkpoints";
  options.path_roots = {root};
  auto engine = TrainerEngine::Create(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

TEST(QwenChatTraining, SftAndTheRewardModelTrainOnConversations) {
  const std::string root = testing::MakeTempDir("trainer-chat");
  testing::TinyModelOptions model;
  model.model_type = "qwen3";
  model.n_layer = 1;
  model.n_embd = 32;
  model.n_head = 2;
  model.tokenizer_dir = Qwen3TokenizerDir();
  ASSERT_TRUE(testing::WriteTinyModel(root + "/policy", model).ok());
  ASSERT_TRUE(util::WriteFileAtomically(root + "/sft.jsonl", kChatSft).ok());
  ASSERT_TRUE(util::WriteFileAtomically(root + "/comparisons.jsonl", kChatComparisons).ok());
  auto engine = Engine(root, root + "/policy");
  ASSERT_TRUE(engine);

  SftJob sft;
  sft.data_path = root + "/sft.jsonl";
  sft.options.epochs = 1;
  sft.options.batch_size = 2;
  auto trained = engine->TrainSft(sft, {});
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ(trained->train_examples, 2);
  // The checkpoint keeps the tokenizer and the chat template, so the next stage and the services render alike.
  EXPECT_TRUE(util::PathExists(trained->checkpoint_path + "/tokenizer_config.json"));

  RewardJob rm;
  rm.comparisons_path = root + "/comparisons.jsonl";
  rm.options.epochs = 1;
  auto reward = engine->TrainRewardModel(rm, {});
  ASSERT_TRUE(reward.ok()) << reward.status();
  EXPECT_EQ(reward->train_examples, 2);
}

TEST(QwenChatTraining, ConversationsForAPolicyWithoutAChatTemplateAreRefusedNamingTheRecord) {
  const std::string root = testing::MakeTempDir("trainer-no-template");
  ASSERT_TRUE(testing::WriteTinyModel(root + "/policy", {}).ok());  // byte tokenizer, no template
  ASSERT_TRUE(util::WriteFileAtomically(root + "/sft.jsonl", kChatSft).ok());
  auto engine = Engine(root, root + "/policy");
  ASSERT_TRUE(engine);
  SftJob sft;
  sft.data_path = root + "/sft.jsonl";
  sft.options.epochs = 1;
  auto trained = engine->TrainSft(sft, {});
  ASSERT_FALSE(trained.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(trained.status())) << trained.status();
  EXPECT_THAT(std::string(trained.status().message()), HasSubstr("sft.jsonl record "));
  EXPECT_THAT(std::string(trained.status().message()), HasSubstr("chat messages need the model's chat template"));
}

}  // namespace
}  // namespace rlhf::trainer
