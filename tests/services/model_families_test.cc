// Every model family through the services over real gRPC on loopback: the generation and reference services on
// the Hugging Face fixtures of each family (greedy decoding and log-probs as transformers computes them), refusal of
// a weight update of another family or shape, and chat-message prompts through generation and reward scoring on a
// model with the real Qwen3 tokenizer and chat template. Suite names contain Llama or Qwen where they are about
// those families, so that `ctest -R 'Llama|Qwen'` selects them.
#include <ATen/core/Tensor.h>
#include <c10/core/InferenceMode.h>
#include <grpcpp/grpcpp.h>
#include <stdlib.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/model/causal_lm.h"
#include "common/model/model_config.h"
#include "common/model/safetensors.h"
#include "common/runtime/client.h"
#include "common/runtime/server.h"
#include "common/serving/engine_metrics.h"
#include "common/tokenizer/chat_template.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/file_util.h"
#include "common/util/path_roots.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/policy_generation/generation_engine.h"
#include "services/policy_generation/policy_generation_service_impl.h"
#include "services/reference_logprob/reference_engine.h"
#include "services/reference_logprob/reference_logprob_service_impl.h"
#include "services/reward_scoring/reward_engine.h"
#include "services/reward_scoring/reward_scoring_service_impl.h"
#include "tests/testing/test_util.h"

namespace rlhf {
namespace {

using ::testing::HasSubstr;

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = ::getenv(name);
  return value != nullptr && *value != '\0' ? std::string(value) : fallback;
}

std::string FixturesDir() {
  return EnvOr("RLHF_FIXTURES_DIR", EnvOr("RLHF_SOURCE_DIR", RLHF_TEST_DEFAULT_SOURCE_DIR) + "/../shared/fixtures");
}

std::string Qwen3TokenizerDir() { return EnvOr("RLHF_DATA_DIR", RLHF_TEST_DEFAULT_DATA_DIR) + "/qwen3"; }
std::string Llama3TokenizerDir() { return EnvOr("RLHF_DATA_DIR", RLHF_TEST_DEFAULT_DATA_DIR) + "/llama3"; }

at::Tensor Expected(const std::string& model_dir, const std::string& name) {
  auto file = model::SafetensorsFile::Open(model_dir + "/expected.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return at::Tensor();
  auto tensor = (*file)->Get(name);
  EXPECT_TRUE(tensor.ok()) << tensor.status();
  return tensor.ok() ? *tensor : at::Tensor();
}

std::vector<int64_t> Row(const at::Tensor& t, int64_t row, int64_t from = 0, int64_t to = -1) {
  at::Tensor r = t[row].to(at::kLong).contiguous();
  const int64_t end = to < 0 ? r.size(0) : to;
  return std::vector<int64_t>(r.data_ptr<int64_t>() + from, r.data_ptr<int64_t>() + end);
}

v1::TextOrTokens Ids(const std::vector<int64_t>& ids) {
  v1::TextOrTokens value;
  value.mutable_token_ids()->mutable_ids()->Add(ids.begin(), ids.end());
  return value;
}

v1::TextOrTokens Messages(const std::vector<std::pair<std::string, std::string>>& messages) {
  v1::TextOrTokens value;
  value.mutable_messages();  // set, even when empty
  for (const auto& [role, content] : messages) {
    v1::ChatMessage* m = value.mutable_messages()->add_messages();
    m->set_role(role);
    m->set_content(content);
  }
  return value;
}

// The generation, reference and reward services (each optional) on one loopback server.
class ModelServices {
 public:
  struct Options {
    std::string policy_dir;  // generation and reference services; empty: none
    std::string reward_dir;  // reward service; empty: none
    std::string path_root;   // what UpdateWeightsFromCheckpoint may read
  };

  explicit ModelServices(const Options& o) {
    auto roots = util::PathRoots::Create({o.path_root}, "--path_roots");
    EXPECT_TRUE(roots.ok()) << roots.status();
    registry_ = std::make_shared<prometheus::Registry>();
    std::vector<runtime::ServiceEntry> services;
    if (!o.policy_dir.empty()) {
      generation::GenerationEngineOptions gen_options;
      gen_options.model.model_dir = o.policy_dir;
      gen_options.model.path_roots = *roots;
      gen_options.queue.max_batch_rows = 8;
      gen_options.max_new_tokens = 64;
      auto gen = generation::GenerationEngine::Create(gen_options);
      EXPECT_TRUE(gen.ok()) << gen.status();
      if (!gen.ok()) return;
      gen_engine_ = *std::move(gen);
      reference::ReferenceEngineOptions ref_options;
      ref_options.model.model_dir = o.policy_dir;
      auto ref = reference::ReferenceEngine::Create(ref_options);
      EXPECT_TRUE(ref.ok()) << ref.status();
      if (!ref.ok()) return;
      ref_engine_ = *std::move(ref);
      gen_metrics_ = std::make_unique<serving::EngineMetrics>(*registry_, "generation", "policy-generation");
      ref_metrics_ = std::make_unique<serving::EngineMetrics>(*registry_, "reference", "reference-logprob");
      gen_service_ =
          std::make_unique<generation::PolicyGenerationServiceImpl>(gen_engine_.get(), gen_metrics_.get(), 1 << 26);
      ref_service_ = std::make_unique<reference::ReferenceLogprobServiceImpl>(ref_engine_.get(), ref_metrics_.get());
      services.push_back({"rlhf.v1.PolicyGenerationService", gen_service_.get()});
      services.push_back({"rlhf.v1.ReferenceLogprobService", ref_service_.get()});
    }
    if (!o.reward_dir.empty()) {
      reward::RewardEngineOptions rm_options;
      rm_options.model.model_dir = o.reward_dir;
      rm_options.queue.max_batch_rows = 8;
      auto rm = reward::RewardEngine::Create(rm_options);
      EXPECT_TRUE(rm.ok()) << rm.status();
      if (!rm.ok()) return;
      rm_engine_ = *std::move(rm);
      rm_metrics_ = std::make_unique<reward::RewardMetrics>(*registry_);
      rm_service_ = std::make_unique<reward::RewardScoringServiceImpl>(rm_engine_.get(), rm_metrics_.get());
      services.push_back({"rlhf.v1.RewardScoringService", rm_service_.get()});
    }
    runtime::ServerOptions server_options;
    server_options.name = "families-test";
    server_options.listen_address = "127.0.0.1:0";
    server_options.metrics_address = "127.0.0.1:0";
    auto server = runtime::Server::Start(server_options, services, registry_);
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return;
    server_ = *std::move(server);
    runtime::ClientOptions client;
    client.target = "127.0.0.1:" + std::to_string(server_->port());
    auto channel = runtime::MakeChannel(client);
    EXPECT_TRUE(channel.ok()) << channel.status();
    if (!channel.ok()) return;
    gen = v1::PolicyGenerationService::NewStub(*channel);
    ref = v1::ReferenceLogprobService::NewStub(*channel);
    rm = v1::RewardScoringService::NewStub(*channel);
    ready_ = true;
  }

  ~ModelServices() {
    if (server_) server_->Shutdown();
    if (gen_engine_) gen_engine_->Shutdown();
    if (ref_engine_) ref_engine_->Shutdown();
    if (rm_engine_) rm_engine_->Shutdown();
  }

  bool ready() const { return ready_; }

  std::unique_ptr<v1::PolicyGenerationService::Stub> gen;
  std::unique_ptr<v1::ReferenceLogprobService::Stub> ref;
  std::unique_ptr<v1::RewardScoringService::Stub> rm;

 private:
  bool ready_ = false;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<generation::GenerationEngine> gen_engine_;
  std::unique_ptr<reference::ReferenceEngine> ref_engine_;
  std::unique_ptr<reward::RewardEngine> rm_engine_;
  std::unique_ptr<serving::EngineMetrics> gen_metrics_, ref_metrics_;
  std::unique_ptr<reward::RewardMetrics> rm_metrics_;
  std::unique_ptr<generation::PolicyGenerationServiceImpl> gen_service_;
  std::unique_ptr<reference::ReferenceLogprobServiceImpl> ref_service_;
  std::unique_ptr<reward::RewardScoringServiceImpl> rm_service_;
  std::unique_ptr<runtime::Server> server_;
};

// --- Language-model fixtures of every family through generation and reference log-probs. ---------------------

class LlamaQwenGpt2FamilyServices : public ::testing::TestWithParam<std::string> {
 protected:
  std::string Dir() const { return FixturesDir() + "/" + GetParam(); }
};

TEST_P(LlamaQwenGpt2FamilyServices, GreedyDecodingAndLogProbsMatchTransformersOverGrpc) {
  ModelServices services({Dir(), "", Dir()});
  ASSERT_TRUE(services.ready());
  auto config = model::ModelConfig::FromFile(Dir() + "/config.json");
  ASSERT_TRUE(config.ok()) << config.status();

  // GetModelInfo reports the family and shape.
  {
    grpc::ClientContext context;
    v1::ModelInfo info;
    ASSERT_TRUE(services.gen->GetModelInfo(&context, {}, &info).ok());
    EXPECT_EQ(info.config().model_type(), config->model_type);
    EXPECT_EQ(info.config().n_layer(), config->num_hidden_layers);
    EXPECT_EQ(info.config().vocab_size(), config->vocab_size);
  }

  // Greedy decoding, KV-cached in the service, token for token.
  const at::Tensor prompt = Expected(Dir(), "greedy_prompt");
  const at::Tensor output = Expected(Dir(), "greedy_output");
  const std::vector<int64_t> prompt_ids = Row(prompt, 0);
  const std::vector<int64_t> want = Row(output, 0, prompt.size(1));
  v1::GenerateRequest request;
  *request.add_prompts() = Ids(prompt_ids);
  request.mutable_sampling()->set_temperature(0);
  request.mutable_sampling()->set_max_new_tokens(static_cast<int32_t>(want.size()));
  request.mutable_sampling()->set_ignore_eos(true);
  v1::GenerateResponse generated;
  {
    auto context = runtime::ContextWithTimeout(absl::Seconds(60));
    const grpc::Status status = services.gen->Generate(context.get(), request, &generated);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  ASSERT_EQ(generated.results_size(), 1);
  ASSERT_EQ(generated.results(0).completions_size(), 1);
  const auto& ids = generated.results(0).completions(0).token_ids();
  EXPECT_EQ(std::vector<int64_t>(ids.begin(), ids.end()), want);

  // Next-token log-probs of each fixture row (first token as the prompt, the rest up to the end of its mask).
  const at::Tensor input_ids = Expected(Dir(), "input_ids");
  const at::Tensor mask = Expected(Dir(), "attention_mask");
  const at::Tensor logprobs = Expected(Dir(), "next_token_logprobs").to(at::kFloat).contiguous();
  v1::LogProbsRequest lp_request;
  std::vector<int64_t> lengths;
  for (int64_t r = 0; r < input_ids.size(0); ++r) {
    const std::vector<int64_t> m = Row(mask, r);
    int64_t length = 0;
    while (length < static_cast<int64_t>(m.size()) && m[length] == 1) ++length;
    ASSERT_GE(length, 2) << "row " << r;
    lengths.push_back(length);
    const std::vector<int64_t> row = Row(input_ids, r, 0, length);
    v1::PromptResponseIds* sequence = lp_request.add_sequences();
    sequence->add_prompt_token_ids(row[0]);
    for (int64_t t = 1; t < length; ++t) sequence->add_response_token_ids(row[t]);
  }
  v1::LogProbsResponse lp;
  {
    auto context = runtime::ContextWithTimeout(absl::Seconds(60));
    const grpc::Status status = services.ref->LogProbs(context.get(), lp_request, &lp);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  ASSERT_EQ(lp.results_size(), input_ids.size(0));
  for (int64_t r = 0; r < input_ids.size(0); ++r) {
    ASSERT_EQ(lp.results(r).logprobs_size(), lengths[r] - 1);
    for (int64_t t = 0; t + 1 < lengths[r]; ++t) {
      EXPECT_NEAR(lp.results(r).logprobs(t), logprobs[r][t].item<float>(), 1e-4f) << "row " << r << " token " << t;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LlamaQwenGpt2FamilyServices,
                         ::testing::Values("gpt2-tiny-lm", "llama-tiny-lm", "qwen3-tiny-lm"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

// A weight update of another family or shape is refused with the field at fault, and the old weights keep serving.
TEST(LlamaQwenServices, AWeightUpdateOfAnotherFamilyIsRefusedAndTheOldWeightsKeepServing) {
  const std::string qwen3 = FixturesDir() + "/qwen3-tiny-lm";
  ModelServices services({qwen3, "", FixturesDir()});
  ASSERT_TRUE(services.ready());
  for (const std::string other : {"llama-tiny-lm", "gpt2-tiny-lm"}) {
    grpc::ClientContext context;
    v1::UpdateWeightsFromCheckpointRequest request;
    request.set_path(FixturesDir() + "/" + other);
    v1::UpdateWeightsResponse response;
    const grpc::Status status = services.gen->UpdateWeightsFromCheckpoint(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << other;
    EXPECT_THAT(status.error_message(), HasSubstr("model_type")) << other;
  }
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(services.gen->GetModelInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.model_id().version(), 1);
  EXPECT_EQ(info.config().model_type(), "qwen3");
  // The same checkpoint is accepted as a new version.
  grpc::ClientContext same_context;
  v1::UpdateWeightsFromCheckpointRequest same;
  same.set_path(qwen3);
  v1::UpdateWeightsResponse updated;
  const grpc::Status status = services.gen->UpdateWeightsFromCheckpoint(&same_context, same, &updated);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(updated.model_id().version(), 2);
}

// --- Chat prompts on a Qwen3-shaped model with the real Qwen3 tokenizer and chat template. ---------------------

class Qwen3ChatPrompts : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::MakeTempDir("chat"));
    auto tokenizer = tokenizer::LoadTokenizer(Qwen3TokenizerDir());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    // A tiny random Qwen3 over the whole vocabulary, as a policy and as a reward model.
    for (const bool reward : {false, true}) {
      const std::string dir = *dir_ + (reward ? "/rm" : "/lm");
      auto config = model::ModelConfig::ForModelType("qwen3");
      ASSERT_TRUE(config.ok());
      config->SetShape(1, 32, 2, 1, 16, 64);
      config->vocab_size = (*tokenizer)->VocabSize();
      config->max_position_embeddings = 256;
      config->eos_token_ids = {*(*tokenizer)->EosId()};
      config->pad_token_id = (*tokenizer)->PadId();
      if (reward) config->architectures = {config->SequenceClassifierArchitecture()};
      model::ModelOptions options;
      options.init_seed = 3;
      options.reward_head = reward;
      auto model = model::CreateModel(*config, options);
      ASSERT_TRUE(model.ok()) << model.status();
      if (reward) {
        c10::InferenceMode off(false);
        at::NoGradGuard no_grad;
        (*model)->StateDict().at("score.weight").normal_(0, 1);  // a head that is not zero
      }
      ASSERT_TRUE((*model)->Save(dir).ok());
      ASSERT_TRUE(tokenizer::CopyTokenizerFiles(Qwen3TokenizerDir(), dir).ok());
    }
    tokenizer_ = tokenizer->release();
  }

  static std::vector<int64_t> Encode(const std::string& text) {
    auto ids = tokenizer_->Encode(text);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.ok() ? std::vector<int64_t>(ids->begin(), ids->end()) : std::vector<int64_t>();
  }

  static int64_t TokenId(const std::string& special) {
    const std::vector<int64_t> ids = Encode(special);
    EXPECT_EQ(ids.size(), 1u) << special;
    return ids.empty() ? -1 : ids[0];
  }

  static std::string* dir_;
  static tokenizer::Tokenizer* tokenizer_;
};

std::string* Qwen3ChatPrompts::dir_ = nullptr;
tokenizer::Tokenizer* Qwen3ChatPrompts::tokenizer_ = nullptr;

TEST_F(Qwen3ChatPrompts, GenerateRendersEachFixtureConversationExactly) {
  ModelServices services({*dir_ + "/lm", "", *dir_});
  ASSERT_TRUE(services.ready());
  {
    grpc::ClientContext context;
    v1::ModelInfo info;
    ASSERT_TRUE(services.gen->GetModelInfo(&context, {}, &info).ok());
    EXPECT_EQ(info.tokenizer().kind(), v1::TOKENIZER_KIND_HF_BPE);
    EXPECT_TRUE(info.tokenizer().chat_template());
    EXPECT_EQ(info.tokenizer().end_of_turn_token_id(), TokenId("<|im_end|>"));
  }
  std::ifstream in(FixturesDir() + "/chat-template-cases.json");
  ASSERT_TRUE(in.good());
  const nlohmann::json cases = nlohmann::json::parse(in).at("qwen3");
  int checked = 0;
  for (const nlohmann::json& c : cases) {
    if (!c.at("add_generation_prompt").get<bool>() || c.contains("enable_thinking") || c.contains("tools")) continue;
    std::vector<std::pair<std::string, std::string>> messages;
    bool plain = true;
    for (const nlohmann::json& m : c.at("messages")) {
      if (!m.at("content").is_string() || m.size() != 2) plain = false;
      if (plain) messages.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
    }
    if (!plain) continue;
    SCOPED_TRACE(c.at("text").get<std::string>());
    v1::GenerateRequest request;
    *request.add_prompts() = Messages(messages);
    request.mutable_sampling()->set_temperature(0);
    request.mutable_sampling()->set_max_new_tokens(2);
    v1::GenerateResponse response;
    auto context = runtime::ContextWithTimeout(absl::Seconds(60));
    const grpc::Status status = services.gen->Generate(context.get(), request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    const auto& ids = response.results(0).prompt_token_ids();
    EXPECT_EQ(std::vector<int64_t>(ids.begin(), ids.end()), Encode(c.at("text").get<std::string>()));
    ++checked;
  }
  EXPECT_GE(checked, 2);

  EXPECT_GE(checked, 2);
}

TEST_F(Qwen3ChatPrompts, ScoreTakesTheResponseAsTheAssistantTurnWithItsEndOfTurnToken) {
  ModelServices services({"", *dir_ + "/rm", *dir_});
  ASSERT_TRUE(services.ready());
  const std::vector<std::pair<std::string, std::string>> conversation = {{"system", "You are terse."},
                                                                         {"user", "What is 2+2?"}};
  v1::ScoreRequest request;
  v1::ScoreItem* chat = request.add_items();
  *chat->mutable_prompt() = Messages(conversation);
  chat->mutable_response()->set_text("4");
  // The same pair as token ids, encoded here from the renderings the template gives (checked against the fixtures
  // by the chat-template tests): the prompt with its generation prompt, the reply as its assistant turn.
  auto chat_template = tokenizer::ChatTemplate::Load(*dir_ + "/rm");
  ASSERT_TRUE(chat_template.ok()) << chat_template.status();
  auto turn = (*chat_template)->RenderAssistantTurn({{"system", "You are terse."}, {"user", "What is 2+2?"}}, "4");
  ASSERT_TRUE(turn.ok()) << turn.status();
  EXPECT_EQ(turn->prompt, "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                          "<|im_start|>assistant\n");
  EXPECT_THAT(turn->completion, ::testing::EndsWith("4<|im_end|>"));
  v1::ScoreItem* ids = request.add_items();
  *ids->mutable_prompt() = Ids(Encode(turn->prompt));
  *ids->mutable_response() = Ids(Encode(turn->completion));
  // And the reply scored without its end of turn, which must differ.
  v1::ScoreItem* unfinished = request.add_items();
  *unfinished->mutable_prompt() = Ids(Encode(turn->prompt));
  std::vector<int64_t> cut = Encode(turn->completion);
  ASSERT_EQ(cut.back(), TokenId("<|im_end|>"));
  cut.pop_back();
  *unfinished->mutable_response() = Ids(cut);
  v1::ScoreResponse response;
  auto context = runtime::ContextWithTimeout(absl::Seconds(60));
  const grpc::Status status = services.rm->Score(context.get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.scores_size(), 3);
  EXPECT_EQ(response.scores(0), response.scores(1));
  EXPECT_NE(response.scores(0), response.scores(2));
}

TEST_F(Qwen3ChatPrompts, BadChatPromptsAreRefusedNamingTheField) {
  ModelServices services({*dir_ + "/lm", *dir_ + "/rm", *dir_});
  ASSERT_TRUE(services.ready());
  struct Case {
    v1::TextOrTokens prompt;
    std::string message;
  };
  std::vector<Case> cases;
  cases.push_back({Messages({}), "prompts[0].messages: at least one message is required"});
  cases.push_back({Messages({{"user", "hi"}, {"", "x"}}), "prompts[0].messages[1].role: required"});
  for (const Case& c : cases) {
    v1::GenerateRequest request;
    *request.add_prompts() = c.prompt;
    v1::GenerateResponse response;
    grpc::ClientContext context;
    const grpc::Status status = services.gen->Generate(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.message;
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  }
  // Messages are a prompt, never a response.
  v1::ScoreRequest request;
  v1::ScoreItem* item = request.add_items();
  *item->mutable_prompt() = Messages({{"user", "hi"}});
  *item->mutable_response() = Messages({{"assistant", "hello"}});
  v1::ScoreResponse response;
  grpc::ClientContext context;
  const grpc::Status status = services.rm->Score(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("items[0].response.messages"));
}

// A model folder without a chat template serves text and token ids, and refuses messages with FAILED_PRECONDITION.
TEST(LlamaQwenServices, MessagesToAModelWithoutAChatTemplateAreRefused) {
  const std::string dir = testing::MakeTempDir("no-template");
  auto tokenizer = tokenizer::LoadTokenizer(Qwen3TokenizerDir());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto config = model::ModelConfig::ForModelType("llama");
  ASSERT_TRUE(config.ok());
  config->SetShape(1, 32, 2, 1);
  config->vocab_size = (*tokenizer)->VocabSize();
  config->max_position_embeddings = 64;
  auto model = model::CreateModel(*config, {});
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_TRUE((*model)->Save(dir).ok());
  // tokenizer.json only: no tokenizer_config.json, so no template.
  auto json = util::ReadFile(Qwen3TokenizerDir() + "/tokenizer.json");
  ASSERT_TRUE(json.ok());
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/tokenizer.json", *json).ok());
  ModelServices services({dir, "", dir});
  ASSERT_TRUE(services.ready());
  v1::GenerateRequest request;
  *request.add_prompts() = Messages({{"user", "hi"}});
  v1::GenerateResponse response;
  grpc::ClientContext context;
  const grpc::Status status = services.gen->Generate(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("prompts[0].messages: chat messages need the model's chat template"));
  grpc::ClientContext text_context;
  v1::GenerateRequest text;
  text.add_prompts()->set_text("hi");
  text.mutable_sampling()->set_max_new_tokens(2);
  EXPECT_TRUE(services.gen->Generate(&text_context, text, &response).ok());
}

// Llama 3's tokenizer ends text with <|end_of_text|> and a turn with <|eot_id|>: a chat reply stops at the turn's
// end although the model's EOS list does not name it. The model is built to answer <|eot_id|> at every step (its
// residual stream carries a constant positive first component, which only <|eot_id|>'s head row reads).
TEST(Llama3ChatPrompts, SamplingStopsAtTheChatTemplatesEndOfTurn) {
  const std::string dir = testing::MakeTempDir("llama3-chat");
  auto tokenizer = tokenizer::LoadTokenizer(Llama3TokenizerDir());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto eot = (*tokenizer)->Encode("<|eot_id|>");
  ASSERT_TRUE(eot.ok() && eot->size() == 1);
  auto config = model::ModelConfig::ForModelType("llama");
  ASSERT_TRUE(config.ok());
  config->SetShape(1, 32, 2, 1);
  config->tie_word_embeddings = false;
  config->vocab_size = (*tokenizer)->VocabSize();
  config->max_position_embeddings = 512;
  config->eos_token_ids = {*(*tokenizer)->EosId()};
  ASSERT_NE(config->eos_token_ids[0], eot->front());
  auto model = model::CreateModel(*config, {});
  ASSERT_TRUE(model.ok()) << model.status();
  {
    c10::InferenceMode off(false);
    at::NoGradGuard no_grad;
    auto state = (*model)->StateDict();
    state.at("model.embed_tokens.weight").select(1, 0).fill_(100.0);
    state.at("model.layers.0.self_attn.o_proj.weight").zero_();
    state.at("model.layers.0.mlp.down_proj.weight").zero_();
    state.at("model.norm.weight").zero_();
    state.at("model.norm.weight")[0].fill_(1.0);
    state.at("lm_head.weight").zero_();
    state.at("lm_head.weight")[eot->front()][0].fill_(1.0);
  }
  ASSERT_TRUE((*model)->Save(dir).ok());
  ASSERT_TRUE(tokenizer::CopyTokenizerFiles(Llama3TokenizerDir(), dir).ok());
  ModelServices services({dir, "", dir});
  ASSERT_TRUE(services.ready());
  {
    grpc::ClientContext context;
    v1::ModelInfo info;
    ASSERT_TRUE(services.gen->GetModelInfo(&context, {}, &info).ok());
    EXPECT_TRUE(info.tokenizer().chat_template());
    EXPECT_EQ(info.tokenizer().end_of_turn_token_id(), eot->front());
  }
  v1::GenerateRequest request;
  *request.add_prompts() = Messages({{"user", "Say nothing."}});
  request.mutable_sampling()->set_temperature(0);
  request.mutable_sampling()->set_max_new_tokens(8);
  v1::GenerateResponse response;
  auto context = runtime::ContextWithTimeout(absl::Seconds(60));
  const grpc::Status status = services.gen->Generate(context.get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const v1::Completion& completion = response.results(0).completions(0);
  EXPECT_EQ(completion.finish_reason(), v1::FINISH_REASON_STOP_TOKEN);
  ASSERT_EQ(completion.token_ids_size(), 1);
  EXPECT_EQ(completion.token_ids(0), eot->front());
  // The prompt starts as the template renders it: <|begin_of_text|><|start_header_id|>...
  const auto& prompt = response.results(0).prompt_token_ids();
  ASSERT_GE(prompt.size(), 2);
  EXPECT_EQ(prompt[0], *(*tokenizer)->BosId());
}

}  // namespace
}  // namespace rlhf
