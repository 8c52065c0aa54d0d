#include "common/model/causal_lm.h"

#include <string>

#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/zeros.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "absl/strings/str_replace.h"
#include "common/model/model_config.h"
#include "common/model/safetensors.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/model/test_env.h"

namespace rlhf::model {
namespace {

using ::testing::HasSubstr;

using testing::LoadOrDie;
using testing::MaxMaskedError;

ModelConfig SmallConfig() {
  ModelConfig c;
  c.SetShape(2, 32, 4);
  c.max_position_embeddings = 48;
  c.vocab_size = 97;
  return c;
}

TEST(Gpt2Model, LogitsMatchHuggingFaceWhereMaskIsOne) {
  auto model = LoadOrDie(testing::TinyLmDir());
  ASSERT_NE(model, nullptr);
  const std::string expected = testing::TinyLmDir() + "/expected.safetensors";
  at::Tensor ids = testing::ReadTensor(expected, "input_ids");
  at::Tensor mask = testing::ReadTensor(expected, "attention_mask");
  at::Tensor logits = testing::ReadTensor(expected, "logits");
  c10::InferenceMode inference;
  auto out = model->Forward(ids, mask);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->logits.sizes(), logits.sizes());
  EXPECT_LT(MaxMaskedError(out->logits, logits, mask), 1e-4);
}

TEST(Gpt2Model, NextTokenLogProbsMatchHuggingFace) {
  auto model = LoadOrDie(testing::TinyLmDir());
  ASSERT_NE(model, nullptr);
  const std::string expected = testing::TinyLmDir() + "/expected.safetensors";
  at::Tensor ids = testing::ReadTensor(expected, "input_ids");
  at::Tensor mask = testing::ReadTensor(expected, "attention_mask");
  at::Tensor want = testing::ReadTensor(expected, "next_token_logprobs");
  c10::InferenceMode inference;
  auto out = model->Forward(ids, mask);
  ASSERT_TRUE(out.ok()) << out.status();
  const int64_t t = ids.size(1);
  at::Tensor logp = at::log_softmax(out->logits.narrow(1, 0, t - 1), -1)
                        .gather(2, ids.narrow(1, 1, t - 1).unsqueeze(-1))
                        .squeeze(-1);
  ASSERT_EQ(logp.sizes(), want.sizes());
  at::Tensor both = mask.narrow(1, 1, t - 1);  // the predicted token is real (so is its context)
  EXPECT_LT(MaxMaskedError(logp, want, both), 1e-4);
}

TEST(Gpt2Model, RewardScoresMatchHuggingFaceSequenceClassifier) {
  auto model = LoadOrDie(testing::TinyRmDir());
  ASSERT_NE(model, nullptr);
  EXPECT_TRUE(model->has_reward_head());
  const std::string expected = testing::TinyRmDir() + "/expected.safetensors";
  at::Tensor ids = testing::ReadTensor(expected, "input_ids");
  at::Tensor mask = testing::ReadTensor(expected, "attention_mask");
  at::Tensor scores = testing::ReadTensor(expected, "scores");
  c10::InferenceMode inference;
  ForwardOptions options;
  options.logits = false;
  options.rewards = true;
  auto out = model->Forward(ids, mask, options);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->rewards.sizes(), scores.sizes());
  EXPECT_LT((out->rewards - scores).abs().max().item<float>(), 1e-4);
}

TEST(Gpt2Model, ForwardRecordingGradientsMatchesInferenceForward) {
  // Without gradients the CPU forward may take the AVX-512 kernel; with them it is plain ATen (autograd).
  auto model = LoadOrDie(testing::TinyRmDir());
  ASSERT_NE(model, nullptr);
  const std::string expected = testing::TinyRmDir() + "/expected.safetensors";
  at::Tensor ids = testing::ReadTensor(expected, "input_ids");
  at::Tensor mask = testing::ReadTensor(expected, "attention_mask");
  ForwardOptions options;
  options.rewards = true;
  auto with_grad = model->Forward(ids, mask, options);
  ASSERT_TRUE(with_grad.ok()) << with_grad.status();
  EXPECT_TRUE(with_grad->logits.requires_grad());
  c10::InferenceMode inference;
  auto without = model->Forward(ids, mask, options);
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_LT(MaxMaskedError(with_grad->logits.detach(), without->logits, mask), 1e-5);
  EXPECT_LT((with_grad->rewards.detach() - without->rewards).abs().max().item<float>(), 1e-5);
}

TEST(Gpt2Model, LeftPaddingGivesTheSameOutputsAsRightPadding) {
  auto model = LoadOrDie(testing::TinyRmDir());
  ASSERT_NE(model, nullptr);
  const std::string expected = testing::TinyRmDir() + "/expected.safetensors";
  at::Tensor ids = testing::ReadTensor(expected, "input_ids");
  at::Tensor mask = testing::ReadTensor(expected, "attention_mask");
  // Move each row's padding to the left.
  at::Tensor left_ids = at::zeros_like(ids);
  at::Tensor left_mask = at::zeros_like(mask);
  const int64_t t = ids.size(1);
  for (int64_t i = 0; i < ids.size(0); ++i) {
    const int64_t n = mask[i].sum().item<int64_t>();
    left_ids[i].narrow(0, t - n, n).copy_(ids[i].narrow(0, 0, n));
    left_mask[i].narrow(0, t - n, n).fill_(1);
  }
  c10::InferenceMode inference;
  ForwardOptions options;
  options.rewards = true;
  auto right = model->Forward(ids, mask, options);
  auto left = model->Forward(left_ids, left_mask, options);
  ASSERT_TRUE(right.ok() && left.ok());
  EXPECT_LT((right->rewards - left->rewards).abs().max().item<float>(), 1e-5);
  for (int64_t i = 0; i < ids.size(0); ++i) {
    const int64_t n = mask[i].sum().item<int64_t>();
    at::Tensor a = right->logits[i].narrow(0, 0, n);
    at::Tensor b = left->logits[i].narrow(0, t - n, n);
    EXPECT_LT((a - b).abs().max().item<float>(), 1e-5) << "row " << i;
  }
}

TEST(Gpt2Model, LoadsASavedLanguageModelAsARewardModelWithAZeroHead) {
  ModelConfig config = SmallConfig();
  auto lm = CreateModel(config);
  ASSERT_TRUE(lm.ok()) << lm.status();
  const std::string dir = testing::MakeTempDir() + "/lm";
  ASSERT_TRUE((*lm)->Save(dir, {{"rlhf.stage", "sft"}}).ok());
  ModelOptions options;
  options.reward_head = true;
  auto rm = LoadModel(dir, options);
  ASSERT_TRUE(rm.ok()) << rm.status();
  EXPECT_TRUE((*rm)->has_reward_head());
  EXPECT_TRUE((*rm)->config().IsSequenceClassifier());
  for (const NamedTensor& p : (*rm)->NamedParameters()) {
    if (p.name == "score.weight" || p.name == "score.bias") {
      EXPECT_TRUE(p.tensor.eq(0).all().item<bool>()) << p.name;
    }
  }
  auto file = SafetensorsFile::Open(dir + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->metadata().at("rlhf.stage"), "sft");
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
}

TEST(Gpt2Model, SaveThenLoadRoundTripsBitExactly) {
  ModelOptions options;
  options.value_head = true;
  auto model = LoadOrDie(testing::TinyRmDir(), options);
  ASSERT_NE(model, nullptr);
  {
    at::NoGradGuard no_grad;  // make the added heads non-trivial
    for (NamedTensor& p : model->NamedParameters()) {
      if (p.name.rfind("value_head", 0) == 0 || p.name == "score.bias") p.tensor.uniform_(-1, 1);
    }
  }
  const std::string dir = testing::MakeTempDir() + "/ckpt";
  ASSERT_TRUE(model->Save(dir).ok());
  auto loaded = LoadOrDie(dir);
  ASSERT_NE(loaded, nullptr);
  EXPECT_TRUE(loaded->has_value_head());
  EXPECT_TRUE(loaded->has_reward_head());
  const auto a = model->NamedParameters();
  const auto b = loaded->NamedParameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].name, b[i].name);
    EXPECT_TRUE(a[i].tensor.equal(b[i].tensor)) << a[i].name;
  }
  auto config = ModelConfig::FromFile(dir + "/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architectures, std::vector<std::string>{"GPT2ForSequenceClassification"});
  EXPECT_EQ(config->pad_token_id, 0);
  // Hugging Face naming and Conv1D layout on disk.
  auto file = SafetensorsFile::Open(dir + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  auto entry = (*file)->Entry("transformer.h.0.attn.c_attn.weight");
  ASSERT_TRUE(entry.ok());
  EXPECT_EQ(entry->shape, (std::vector<int64_t>{64, 192}));
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
}

TEST(Gpt2Model, LoadsCheckpointsWithoutTransformerPrefix) {
  auto file = SafetensorsFile::Open(testing::TinyLmDir() + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  std::map<std::string, at::Tensor> renamed;
  for (const std::string& name : (*file)->Names()) {
    renamed[absl::StrReplaceAll(name, {{"transformer.", ""}})] = *(*file)->Get(name);
  }
  renamed["h.0.attn.bias"] = at::ones({1, 1, 64, 64});  // old checkpoints carry the causal mask buffer
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", renamed).ok());
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/config.json", *util::ReadFile(testing::TinyLmDir() + "/config.json"))
                  .ok());
  auto bare = LoadOrDie(dir);
  auto original = LoadOrDie(testing::TinyLmDir());
  ASSERT_NE(bare, nullptr);
  ASSERT_NE(original, nullptr);
  for (size_t i = 0; i < original->NamedParameters().size(); ++i) {
    EXPECT_TRUE(original->NamedParameters()[i].tensor.equal(bare->NamedParameters()[i].tensor));
  }
}

TEST(Gpt2Model, LoadsHalfPrecisionCheckpointsAsFloat32) {
  auto file = SafetensorsFile::Open(testing::TinyLmDir() + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  std::map<std::string, at::Tensor> half;
  for (const std::string& name : (*file)->Names()) half[name] = (*file)->Get(name)->to(at::kBFloat16);
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", half).ok());
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/config.json", *util::ReadFile(testing::TinyLmDir() + "/config.json"))
                  .ok());
  auto model = LoadOrDie(dir);
  ASSERT_NE(model, nullptr);
  for (const NamedTensor& p : model->NamedParameters()) {
    EXPECT_EQ(p.tensor.scalar_type(), at::kFloat);
    EXPECT_TRUE(p.tensor.equal(half.at(p.name).to(at::kFloat))) << p.name;
  }
}

TEST(Gpt2Model, LoadFailsWithClearErrorsOnBadCheckpoints) {
  const std::string dir = testing::MakeTempDir();
  const std::string config = *util::ReadFile(testing::TinyLmDir() + "/config.json");
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/config.json", config).ok());

  auto missing_file = LoadModel(dir);
  EXPECT_EQ(missing_file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing_file.status().message(), HasSubstr(dir + ": no model.safetensors"));

  ASSERT_TRUE(util::WriteFileAtomically(dir + "/model.safetensors", "\x10\0\0\0\0\0\0\0{\"a\":").ok());
  auto corrupt = LoadModel(dir);
  EXPECT_EQ(corrupt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(corrupt.status().message(), HasSubstr(dir + "/model.safetensors"));

  auto file = SafetensorsFile::Open(testing::TinyLmDir() + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  std::map<std::string, at::Tensor> tensors;
  for (const std::string& name : (*file)->Names()) tensors[name] = *(*file)->Get(name);
  tensors.erase("transformer.h.1.mlp.c_fc.bias");
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  auto missing_tensor = LoadModel(dir);
  EXPECT_EQ(missing_tensor.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing_tensor.status().message(), HasSubstr("tensor 'transformer.h.1.mlp.c_fc.bias' not found"));

  tensors["transformer.h.1.mlp.c_fc.bias"] = at::zeros({255});
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  auto bad_shape = LoadModel(dir);
  EXPECT_EQ(bad_shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_shape.status().message(),
              HasSubstr("tensor 'transformer.h.1.mlp.c_fc.bias' has shape [255], the config needs [256]"));

  tensors["transformer.h.1.mlp.c_fc.bias"] = at::zeros({256});
  tensors["v_head.summary.weight"] = at::zeros({1, 64});
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  auto unknown = LoadModel(dir);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("unexpected tensors 'v_head.summary.weight'"));
  ModelOptions lenient;
  lenient.ignore_unknown_tensors = true;
  EXPECT_TRUE(LoadModel(dir, lenient).ok());
}

TEST(ModelConfig, ParsesHuggingFaceConfigAndWritesItBack) {
  auto config = ModelConfig::FromFile(testing::TinyRmDir() + "/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_hidden_layers, 2);
  EXPECT_EQ(config->hidden_size, 64);
  EXPECT_EQ(config->num_attention_heads, 4);
  EXPECT_EQ(config->num_key_value_heads, 4);
  EXPECT_EQ(config->head_dim, 16);
  EXPECT_EQ(config->intermediate_size, 256);
  EXPECT_EQ(config->vocab_size, 512);
  EXPECT_EQ(config->num_labels, 1);
  EXPECT_EQ(config->pad_token_id, 0);
  EXPECT_EQ(config->hidden_act, "gelu_new");
  EXPECT_TRUE(config->IsSequenceClassifier());
  auto again = ModelConfig::FromJson(config->ToJson());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->ToJson(), config->ToJson());
  EXPECT_THAT(config->ToJson(), HasSubstr("\"initializer_range\": 0.02"));  // unknown fields survive
  EXPECT_THAT(config->ToJson(), HasSubstr("\"id2label\""));
}

TEST(ModelConfig, FailsWithFieldNamesWhenInvalid) {
  struct Case {
    std::string json;
    std::string message;
  };
  const Case cases[] = {
      {R"({"n_embd": 100, "n_head": 12})", "field 'n_embd' 100 is not divisible by n_head=12"},
      {R"({"n_layer": "two"})", "field 'n_layer' must be an integer"},
      {R"({"n_layer": 0})", "field 'n_layer' must be positive"},
      {R"({"activation_function": "swish"})", "field 'activation_function' 'swish' is not supported"},
      {R"({"resid_pdrop": 1.5})", "field 'resid_pdrop' must be in [0, 1)"},
      {R"({"model_type": "bert"})", "field 'model_type' 'bert' is not supported"},
      {R"({"tie_word_embeddings": false})", "field 'tie_word_embeddings' must be true"},
      {R"({"n_layer": 2,)", "bad JSON"},
  };
  for (const Case& c : cases) {
    auto config = ModelConfig::FromJson(c.json, "my/config.json");
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(config.status().message(), HasSubstr(c.message)) << c.json;
    EXPECT_THAT(config.status().message(), HasSubstr("my/config.json")) << c.json;
  }
}

TEST(Gpt2Model, ForwardRejectsBadInputs) {
  auto model = CreateModel(SmallConfig());
  ASSERT_TRUE(model.ok());
  at::Tensor ids = at::full({2, 5}, 3, at::kLong);
  at::Tensor mask = at::ones({2, 5}, at::kLong);
  auto out_of_vocab = (*model)->Forward(at::full({2, 5}, 97, at::kLong), mask);
  EXPECT_EQ(out_of_vocab.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out_of_vocab.status().message(), HasSubstr("input_ids has values in [97, 97]"));
  auto shape = (*model)->Forward(ids, at::ones({2, 4}, at::kLong));
  EXPECT_THAT(shape.status().message(), HasSubstr("attention_mask shape [2,4] differs"));
  auto too_long = (*model)->Forward(at::ones({1, 49}, at::kLong), at::ones({1, 49}, at::kLong));
  EXPECT_THAT(too_long.status().message(), HasSubstr("more than max_position_embeddings=48"));
  ForwardOptions rewards;
  rewards.rewards = true;
  auto no_head = (*model)->Forward(ids, mask, rewards);
  EXPECT_THAT(no_head.status().message(), HasSubstr("no reward head"));
}

TEST(Gpt2Model, TrainingModeAppliesDropoutAndGradientsReachEveryParameter) {
  ModelConfig config = SmallConfig();
  config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.2;
  ModelOptions options;
  options.value_head = true;
  options.reward_head = true;
  auto model = CreateModel(config, options);
  ASSERT_TRUE(model.ok()) << model.status();
  at::manual_seed(1);
  at::Tensor ids = at::randint(0, 97, {3, 10}, at::kLong);
  at::Tensor mask = at::ones({3, 10}, at::kLong);
  ForwardOptions all;
  all.values = all.rewards = true;
  auto eval_a = (*model)->Forward(ids, mask, all);
  auto eval_b = (*model)->Forward(ids, mask, all);
  ASSERT_TRUE(eval_a.ok() && eval_b.ok());
  EXPECT_TRUE(eval_a->logits.equal(eval_b->logits));
  EXPECT_TRUE(eval_a->values.equal(at::zeros({3, 10})));  // zero-initialised value head
  EXPECT_TRUE(eval_a->rewards.equal(at::zeros({3})));
  (*model)->SetTraining(true);
  auto train_a = (*model)->Forward(ids, mask, all);
  auto train_b = (*model)->Forward(ids, mask, all);
  ASSERT_TRUE(train_a.ok() && train_b.ok());
  EXPECT_FALSE(train_a->logits.equal(train_b->logits));
  auto bad = (*model)->SetDropout(1.0, 0, 0);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr("field 'resid_pdrop' must be in [0, 1)"));
  (train_a->logits.pow(2).mean() + train_a->values.sum() + train_a->rewards.sum()).backward();
  for (const NamedTensor& p : (*model)->NamedParameters()) {
    ASSERT_TRUE(p.tensor.grad().defined()) << p.name;
    EXPECT_GT(p.tensor.grad().abs().sum().item<float>(), 0) << p.name;
  }
}

}  // namespace
}  // namespace rlhf::model
