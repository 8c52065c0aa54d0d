// The Llama family (Llama 3, Qwen2, Qwen3) against the reference fixtures, and its checkpoints and configs.
// Suite names contain Llama or Qwen so that `ctest -R 'Llama|Qwen'` selects them.
#include "common/model/llama.h"

#include <string>
#include <vector>

#include <ATen/ops/full.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/tensor.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/model/causal_lm.h"
#include "common/model/sampler.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/model/test_env.h"

namespace rlhf::model {
namespace {

using ::testing::HasSubstr;

using testing::LoadOrDie;
using testing::MaxMaskedError;

std::vector<int64_t> Row(const at::Tensor& t) {
  at::Tensor c = t.to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// ---------------------------------------------------------------------------------------------------------------
// Causal LM fixtures: one test body per fixture folder.

class LlamaFamilyLm : public ::testing::TestWithParam<std::string> {
 protected:
  std::string Dir() const { return testing::FixturesDir() + "/" + GetParam(); }
  std::string Expected() const { return Dir() + "/expected.safetensors"; }
};

TEST_P(LlamaFamilyLm, LogitsMatchTransformersWhereMaskIsOne) {
  auto model = LoadOrDie(Dir());
  ASSERT_NE(model, nullptr);
  at::Tensor ids = testing::ReadTensor(Expected(), "input_ids");
  at::Tensor mask = testing::ReadTensor(Expected(), "attention_mask");
  at::Tensor logits = testing::ReadTensor(Expected(), "logits", SafetensorsConversion::kFloat32);
  c10::InferenceMode inference;
  auto out = model->Forward(ids, mask);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->logits.sizes(), logits.sizes());
  EXPECT_LT(MaxMaskedError(out->logits, logits, mask), 1e-4);
}

TEST_P(LlamaFamilyLm, NextTokenLogProbsMatchTransformers) {
  auto model = LoadOrDie(Dir());
  ASSERT_NE(model, nullptr);
  at::Tensor ids = testing::ReadTensor(Expected(), "input_ids");
  at::Tensor mask = testing::ReadTensor(Expected(), "attention_mask");
  at::Tensor want = testing::ReadTensor(Expected(), "next_token_logprobs", SafetensorsConversion::kFloat32);
  c10::InferenceMode inference;
  auto out = model->Forward(ids, mask);
  ASSERT_TRUE(out.ok()) << out.status();
  const int64_t t = ids.size(1);
  at::Tensor logp = at::log_softmax(out->logits.narrow(1, 0, t - 1), -1)
                        .gather(2, ids.narrow(1, 1, t - 1).to(at::kLong).unsqueeze(-1))
                        .squeeze(-1);
  ASSERT_EQ(logp.sizes(), want.sizes());
  EXPECT_LT(MaxMaskedError(logp, want, mask.narrow(1, 1, t - 1)), 1e-4);
}

TEST_P(LlamaFamilyLm, GreedyKvCachedDecodingMatchesTransformersTokenForToken) {
  auto model = LoadOrDie(Dir());
  ASSERT_NE(model, nullptr);
  const std::vector<int64_t> prompt = Row(testing::ReadTensor(Expected(), "greedy_prompt"));
  const std::vector<int64_t> want = Row(testing::ReadTensor(Expected(), "greedy_output"));
  ASSERT_GT(want.size(), prompt.size());
  auto sampler = Sampler::Create(model.get());
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  SamplingOptions options;
  options.temperature = 0;
  options.max_new_tokens = static_cast<int64_t>(want.size() - prompt.size());
  auto out = (*sampler)->Generate({prompt}, options);
  ASSERT_TRUE(out.ok()) << out.status();
  std::vector<int64_t> got = prompt;
  got.insert(got.end(), (*out)[0].tokens.begin(), (*out)[0].tokens.end());
  EXPECT_EQ(got, want);
}

TEST_P(LlamaFamilyLm, KvCachedSamplingEqualsFullRecomputation) {
  auto model = LoadOrDie(Dir());
  ASSERT_NE(model, nullptr);
  const int64_t vocab = model->config().vocab_size;
  const std::vector<std::vector<int64_t>> prompts = {{1, 2, 3, 4, 5}, {7 % vocab}, {9, 8, 7}};
  auto sampler = Sampler::Create(model.get());
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  SamplingOptions options;
  options.max_new_tokens = 12;
  options.seed = 7;
  auto cached = (*sampler)->Generate(prompts, options);
  auto full = (*sampler)->GenerateWithoutCache(prompts, options);
  ASSERT_TRUE(cached.ok()) << cached.status();
  ASSERT_TRUE(full.ok()) << full.status();
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ((*cached)[i].tokens, (*full)[i].tokens) << "row " << i;
    ASSERT_EQ((*cached)[i].logprobs.size(), (*full)[i].logprobs.size());
    for (size_t j = 0; j < (*cached)[i].logprobs.size(); ++j) {
      EXPECT_NEAR((*cached)[i].logprobs[j], (*full)[i].logprobs[j], 1e-4) << "row " << i << " token " << j;
    }
  }
}

// Grouped-query attention with left padding: a row sampled in a mixed-length batch equals the same row alone.
TEST_P(LlamaFamilyLm, RowSampledInABatchEqualsTheRowSampledAlone) {
  auto model = LoadOrDie(Dir());
  ASSERT_NE(model, nullptr);
  ASSERT_LT(model->config().num_key_value_heads, model->config().num_attention_heads) << "the fixture is not GQA";
  const std::vector<std::vector<int64_t>> prompts = {{11, 12, 13, 14, 15, 16, 17}, {21}, {31, 32, 33}};
  auto sampler = Sampler::Create(model.get());
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  SamplingOptions options;
  options.max_new_tokens = 10;
  options.seed = 3;
  auto batch = (*sampler)->Generate(prompts, options);
  ASSERT_TRUE(batch.ok()) << batch.status();
  for (size_t i = 0; i < prompts.size(); ++i) {
    SamplingOptions alone = options;
    alone.row_seeds = {RowSeed(options.seed, static_cast<int64_t>(i))};
    auto single = (*sampler)->Generate({prompts[i]}, alone);
    ASSERT_TRUE(single.ok()) << single.status();
    EXPECT_EQ((*single)[0].tokens, (*batch)[i].tokens) << "row " << i;
  }
}

TEST_P(LlamaFamilyLm, SaveThenLoadRoundTripsBitExactlyAlsoInShards) {
  auto model = LoadOrDie(Dir());
  ASSERT_NE(model, nullptr);
  const std::string tmp = testing::MakeTempDir();
  for (const int64_t shard_bytes : {int64_t{1} << 30, int64_t{100000}}) {
    const std::string dir = absl::StrCat(tmp, "/saved-", shard_bytes);
    ASSERT_TRUE(model->Save(dir, {{"rlhf.stage", "test"}}, shard_bytes).ok());
    const bool sharded = shard_bytes < 1000000;
    EXPECT_EQ(util::PathExists(dir + "/model.safetensors.index.json"), sharded);
    EXPECT_EQ(util::PathExists(dir + "/model.safetensors"), !sharded);
    auto again = LoadOrDie(dir);
    ASSERT_NE(again, nullptr);
    EXPECT_TRUE(CheckSameArchitecture(model->config(), again->config()).ok());
    EXPECT_EQ(again->config().model_type, model->config().model_type);
    EXPECT_EQ(again->config().torch_dtype, "float32");
    const auto a = model->StateDict();
    const auto b = again->StateDict();
    ASSERT_EQ(a.size(), b.size());
    for (const auto& [name, tensor] : a) {
      ASSERT_EQ(b.count(name), 1u) << name;
      EXPECT_TRUE(tensor.equal(b.at(name))) << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LlamaFamilyLm,
                         ::testing::Values("llama-tiny-lm", "llama-tiny-lm-bf16", "llama-tiny-lm-sharded",
                                           "qwen3-tiny-lm"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return absl::StrReplaceAll(info.param, {{"-", "_"}});
                         });

// ---------------------------------------------------------------------------------------------------------------
// Reward model and configs.

TEST(QwenRewardModel, ScoresMatchTransformersSequenceClassifier) {
  const std::string dir = testing::FixturesDir() + "/qwen2-tiny-rm";
  auto model = LoadOrDie(dir);
  ASSERT_NE(model, nullptr);
  EXPECT_TRUE(model->has_reward_head());
  EXPECT_EQ(model->config().architectures, std::vector<std::string>{"Qwen2ForSequenceClassification"});
  const std::string expected = dir + "/expected.safetensors";
  at::Tensor ids = testing::ReadTensor(expected, "input_ids");
  at::Tensor mask = testing::ReadTensor(expected, "attention_mask");
  at::Tensor want = testing::ReadTensor(expected, "scores", SafetensorsConversion::kFloat32);
  c10::InferenceMode inference;
  ForwardOptions options;
  options.logits = false;
  options.rewards = true;
  auto out = model->Forward(ids, mask, options);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->rewards.sizes(), want.sizes());
  EXPECT_LT((out->rewards - want).abs().max().item<float>(), 1e-4);
}

TEST(QwenConfig, ReadsEachFixtureLayout) {
  auto llama = ModelConfig::FromFile(testing::FixturesDir() + "/llama-tiny-lm-sharded/config.json");
  ASSERT_TRUE(llama.ok()) << llama.status();
  EXPECT_EQ(llama->family(), ModelFamily::kLlama);
  EXPECT_TRUE(llama->rope_scaling.has_value());  // from transformers 5's rope_parameters
  EXPECT_FALSE(llama->tie_word_embeddings);
  auto qwen3 = ModelConfig::FromFile(testing::FixturesDir() + "/qwen3-tiny-lm/config.json");
  ASSERT_TRUE(qwen3.ok()) << qwen3.status();
  EXPECT_TRUE(qwen3->qk_norm);
  EXPECT_NE(qwen3->head_dim * qwen3->num_attention_heads, qwen3->hidden_size);
  auto qwen2 = ModelConfig::FromFile(testing::FixturesDir() + "/qwen2-tiny-rm/config.json");
  ASSERT_TRUE(qwen2.ok()) << qwen2.status();
  EXPECT_TRUE(qwen2->attention_bias);
  EXPECT_FALSE(qwen2->o_proj_bias);
  EXPECT_TRUE(qwen2->IsSequenceClassifier());
}

TEST(LlamaConfig, RefusesWhatItDoesNotRunNamingTheField) {
  const std::string base = R"({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
      "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64)";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})", "rope_scaling.rope_type' 'yarn'"},
      {R"(, "rope_parameters": {"rope_type": "dynamic", "rope_theta": 10000.0}})",
       "rope_parameters.rope_type' 'dynamic'"},
      {R"(, "model_type": "mistral", "sliding_window": 16})", "field 'sliding_window' 16 is shorter"},
      {R"(, "model_type": "qwen2", "use_sliding_window": true, "sliding_window": 32})", "field 'sliding_window'"},
      {R"(, "layer_types": ["full_attention", "sliding_attention"]})", "field 'layer_types[1]'"},
      {R"(, "num_local_experts": 8})", "field 'num_local_experts'"},
      {R"(, "hidden_act": "gelu"})", "field 'hidden_act' 'gelu' is not supported"},
      {R"(, "num_key_value_heads": 3})", "field 'num_key_value_heads' 3 does not divide"},
      {R"(, "model_type": "mixtral"})", "field 'model_type' 'mixtral' is not supported"},
  };
  for (const auto& [tail, message] : cases) {
    auto config = ModelConfig::FromJson(base + tail, "cfg.json");
    ASSERT_FALSE(config.ok()) << tail;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << tail;
    EXPECT_THAT(config.status().message(), HasSubstr(message)) << tail;
    EXPECT_THAT(config.status().message(), HasSubstr("cfg.json")) << tail;
  }
  // A mistral window wider than any sequence is plain attention.
  EXPECT_TRUE(ModelConfig::FromJson(base + R"(, "model_type": "mistral", "sliding_window": 64})").ok());
}

TEST(LlamaConfig, WritesWhatItReadsForEveryType) {
  for (const std::string type : {"llama", "qwen2", "qwen3", "mistral"}) {
    auto config = ModelConfig::ForModelType(type);
    ASSERT_TRUE(config.ok()) << type;
    config->SetShape(2, 64, 4, 2);
    config->eos_token_ids = {5, 6};
    auto again = ModelConfig::FromJson(config->ToJson());
    ASSERT_TRUE(again.ok()) << type << ": " << again.status();
    EXPECT_TRUE(CheckSameArchitecture(*config, *again).ok()) << type;
    EXPECT_EQ(again->eos_token_ids, (std::vector<int64_t>{5, 6})) << type;
    EXPECT_EQ(again->architectures, config->architectures) << type;
  }
}

// A config that claims far more than the files hold is refused by name before anything is allocated.
TEST(LlamaCheckpoint, ConfigDescribingMissingWeightsIsRefusedBeforeAllocating) {
  const std::string dir = testing::MakeTempDir() + "/huge";
  ASSERT_TRUE(util::MakeDirectories(dir).ok());
  const std::string source = testing::FixturesDir() + "/llama-tiny-lm";
  ASSERT_TRUE(util::CopyFileAtomically(source + "/model.safetensors", dir + "/model.safetensors").ok());
  auto text = util::ReadFile(source + "/config.json");
  ASSERT_TRUE(text.ok());
  ASSERT_TRUE(util::WriteFileAtomically(
                  dir + "/config.json", absl::StrReplaceAll(*text, {{"\"num_hidden_layers\": 2",
                                                                     "\"num_hidden_layers\": 1000000"}}))
                  .ok());
  auto model = LoadModel(dir);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("num_hidden_layers=1000000"));
  EXPECT_THAT(model.status().message(), HasSubstr("bytes of weights"));
  // One layer more than the files hold is refused by the first missing tensor.
  ASSERT_TRUE(util::WriteFileAtomically(
                  dir + "/config.json", absl::StrReplaceAll(*text, {{"\"num_hidden_layers\": 2",
                                                                     "\"num_hidden_layers\": 3"}}))
                  .ok());
  model = LoadModel(dir);
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), HasSubstr("model.layers.2.input_layernorm.weight' not found"));
}

TEST(LlamaCheckpoint, RandomConfigTooLargeForMemoryIsRefused) {
  auto config = ModelConfig::ForModelType("qwen3");
  ASSERT_TRUE(config.ok());
  config->SetShape(1000000, 4096, 32, 8, 128, 12288);
  auto model = CreateModel(*config);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(model.status().message(), HasSubstr("GiB of memory"));
}

TEST(LlamaCheckpoint, NonFiniteWeightsAreRefusedNamingTheTensor) {
  auto config = ModelConfig::ForModelType("llama");
  ASSERT_TRUE(config.ok());
  config->SetShape(1, 16, 2, 1);
  config->vocab_size = 32;
  config->max_position_embeddings = 16;
  auto model = CreateModel(*config);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::string dir = testing::MakeTempDir() + "/nan";
  {
    c10::InferenceMode inference(false);
    at::NoGradGuard no_grad;
    for (const NamedTensor& p : (*model)->NamedParameters()) {
      if (p.name == "model.layers.0.mlp.up_proj.weight") p.tensor[3][1] = std::nan("");
    }
  }
  ASSERT_TRUE((*model)->Save(dir).ok());
  auto loaded = LoadModel(dir);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(loaded.status().message(), HasSubstr("'model.layers.0.mlp.up_proj.weight' holds a non-finite value"));
  // The same through LoadWeights (weight updates).
  auto weights = WeightSource::OpenCheckpoint(dir);
  ASSERT_TRUE(weights.ok()) << weights.status();
  absl::Status update = (*model)->LoadWeights(**weights);
  EXPECT_EQ(update.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(update.message(), HasSubstr("non-finite"));
}

// Every family trains through the same interface: a few steps of next-token loss on a fixed batch lower it.
TEST(LlamaTraining, GradientsReachEveryParameterOfEveryType) {
  for (const std::string type : {"llama", "qwen2", "qwen3"}) {
    auto config = ModelConfig::ForModelType(type);
    ASSERT_TRUE(config.ok());
    config->SetShape(2, 32, 4, 2);
    config->vocab_size = 40;
    config->max_position_embeddings = 32;
    config->tie_word_embeddings = type != "llama";
    ModelOptions options;
    options.value_head = true;
    options.reward_head = true;
    auto model = CreateModel(*config, options);
    ASSERT_TRUE(model.ok()) << type << ": " << model.status();
    at::Tensor ids = at::tensor(std::vector<int64_t>{1, 5, 9, 3, 2, 7, 7, 1}, at::kLong).view({2, 4});
    at::Tensor mask = at::ones({2, 4}, at::kLong);
    ForwardOptions fo;
    fo.values = true;
    fo.rewards = true;
    auto out = (*model)->Forward(ids, mask, fo);
    ASSERT_TRUE(out.ok()) << out.status();
    (out->logits.logsumexp(-1).sum() + out->values.sum() + out->rewards.sum()).backward();
    for (const NamedTensor& p : (*model)->NamedParameters()) {
      ASSERT_TRUE(p.tensor.grad().defined()) << type << " " << p.name;
      EXPECT_GT(p.tensor.grad().abs().sum().item<float>(), 0) << type << " " << p.name;
    }
  }
}

}  // namespace
}  // namespace rlhf::model
