// `rlhf init-model`: a random model of any family, with the tokenizer (and chat template) of a folder a user names.
#include <stdlib.h>

#include <string>

#include "common/model/causal_lm.h"
#include "common/model/model_config.h"
#include "common/tokenizer/chat_template.h"
#include "common/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_util.h"
#include "tools/cli/model_commands.h"

namespace rlhf::cli {
namespace {

using ::testing::HasSubstr;

std::string Qwen3TokenizerDir() {
  const char* value = ::getenv("RLHF_DATA_DIR");
  return std::string(value != nullptr && *value != '\0' ? value : RLHF_TEST_DEFAULT_DATA_DIR) + "/qwen3";
}

TEST(InitModelTest, AQwenRewardModelTakesTheTokenizerAndChatTemplateOfAFolder) {
  InitModelOptions options;
  options.out_dir = testing::MakeTempDir("init-model") + "/rm";
  options.model_type = "qwen2";
  options.n_layer = 1;
  options.n_embd = 32;
  options.n_head = 4;
  options.num_key_value_heads = 2;
  options.tokenizer = Qwen3TokenizerDir();
  options.reward_head = true;
  options.seed = 4;
  ASSERT_TRUE(InitModel(options).ok());

  auto tokenizer = tokenizer::LoadTokenizer(options.out_dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->Kind(), tokenizer::kHfBpeKind);
  EXPECT_TRUE(tokenizer::ChatTemplate::Load(options.out_dir).ok());
  auto config = model::ModelConfig::FromFile(options.out_dir + "/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model_type, "qwen2");
  EXPECT_EQ(config->vocab_size, (*tokenizer)->VocabSize());
  EXPECT_EQ(config->eos_token_id(), (*tokenizer)->EosId());
  EXPECT_EQ(config->pad_token_id, (*tokenizer)->PadId());
  EXPECT_EQ(config->architectures, std::vector<std::string>{"Qwen2ForSequenceClassification"});
  // The head is not zero: two texts score differently.
  auto model = model::LoadModel(options.out_dir);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_TRUE((*model)->has_reward_head());
  const at::Tensor head = (*model)->StateDict().at("score.weight");
  EXPECT_GT(head.abs().max().item<float>(), 0.0f);
  EXPECT_LT(head.abs().max().item<float>(), 0.2f);
}

TEST(InitModelTest, AFolderWithoutATokenizerIsRefusedNamingTheFlag) {
  InitModelOptions options;
  options.out_dir = testing::MakeTempDir("init-model") + "/m";
  options.tokenizer = testing::MakeTempDir("empty");
  const absl::Status status = InitModel(options);
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("--tokenizer="));
}

}  // namespace
}  // namespace rlhf::cli
