// The reward-scoring service over real gRPC on loopback: scores against in-process forwards, the Hugging Face
// fixture, hot reload under concurrent load (watcher and RPC), refused checkpoints, bad requests, deadlines, a full
// queue and ScoreStream.
#include <ATen/core/Tensor.h>
#include <ATen/ops/tensor.h>
#include <c10/core/InferenceMode.h>
#include <grpcpp/grpcpp.h>
#include <stdio.h>
#include <stdlib.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/model/causal_lm.h"
#include "common/model/model_config.h"
#include "common/model/safetensors.h"
#include "common/runtime/client.h"
#include "common/runtime/server.h"
#include "common/runtime/status_util.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/file_util.h"
#include "common/util/path_roots.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/reward_scoring/reward_engine.h"
#include "services/reward_scoring/reward_scoring_service_impl.h"
#include "tests/testing/test_util.h"
#include "tests/testing/tiny_model.h"

namespace rlhf {
namespace {

using ::testing::HasSubstr;

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = ::getenv(name);
  return value != nullptr && *value != '\0' ? std::string(value) : fallback;
}

// A tiny reward model (byte tokenizer, 258 ids, EOS 256) whose body comes from `seed` and whose reward head is set
// to non-trivial values (WriteTinyModel's head is zero) with score.bias = `bias`.
void WriteRewardModel(const std::string& dir, uint64_t seed, float bias, int64_t n_embd = 32) {
  testing::TinyModelOptions options;
  options.seed = seed;
  options.reward_head = true;
  options.n_embd = n_embd;
  ASSERT_TRUE(testing::WriteTinyModel(dir, options).ok());
  auto model = model::LoadModel(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  {
    c10::InferenceMode off(false);
    at::NoGradGuard no_grad;
    auto state = (*model)->StateDict();
    at::Tensor w = state.at("score.weight");
    float* data = w.data_ptr<float>();
    for (int64_t i = 0; i < w.numel(); ++i) data[i] = static_cast<float>(std::sin(1.7 * seed + 0.9 * i));
    state.at("score.bias").fill_(bias);
  }
  ASSERT_TRUE((*model)->Save(dir).ok());
}

// What the trainer does: write the checkpoint under a hidden name, then rename it into place.
void PublishCheckpoint(const std::string& watch_dir, const std::string& name, uint64_t seed, float bias) {
  const std::string tmp = watch_dir + "/.tmp-" + name;
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(tmp, seed, bias));
  ASSERT_EQ(::rename(tmp.c_str(), (watch_dir + "/" + name).c_str()), 0) << name;
}

v1::ScoreItem Tokens(const std::vector<int>& prompt, const std::vector<int>& response) {
  v1::ScoreItem item;
  item.mutable_prompt()->mutable_token_ids()->mutable_ids()->Add(prompt.begin(), prompt.end());
  item.mutable_response()->mutable_token_ids()->mutable_ids()->Add(response.begin(), response.end());
  return item;
}

v1::ScoreItem Text(const std::string& prompt, const std::string& response) {
  v1::ScoreItem item;
  item.mutable_prompt()->set_text(prompt);
  item.mutable_response()->set_text(response);
  return item;
}

v1::ScoreRequest Request(const std::vector<v1::ScoreItem>& items, const std::string& request_id = "") {
  v1::ScoreRequest request;
  for (const auto& item : items) *request.add_items() = item;
  request.set_request_id(request_id);
  return request;
}

// Scores of `request`'s items computed in-process from the checkpoint in `dir`: CausalLm::Forward with rewards on
// each (prompt + response) alone, unpadded. Text is encoded with the checkpoint's tokenizer, responses + EOS.
std::vector<float> InProcessScores(const std::string& dir, const v1::ScoreRequest& request) {
  auto model = model::LoadModel(dir);
  EXPECT_TRUE(model.ok()) << model.status();
  auto tokenizer = tokenizer::LoadTokenizer(dir);
  std::vector<float> scores;
  if (!model.ok()) return scores;
  c10::InferenceMode inference;
  for (const v1::ScoreItem& item : request.items()) {
    std::vector<int64_t> ids;
    for (const v1::TextOrTokens* part : {&item.prompt(), &item.response()}) {
      if (part->has_token_ids()) {
        ids.insert(ids.end(), part->token_ids().ids().begin(), part->token_ids().ids().end());
      } else {
        EXPECT_TRUE(tokenizer.ok());
        auto encoded = (*tokenizer)->EncodeOrdinary(part->text());
        ids.insert(ids.end(), encoded->begin(), encoded->end());
        if (part == &item.response()) ids.push_back(*(*tokenizer)->EosId());
      }
    }
    const int64_t n = static_cast<int64_t>(ids.size());
    at::Tensor input = at::tensor(ids, at::kLong).view({1, n});
    at::Tensor mask = at::ones_like(input);
    model::ForwardOptions options;
    options.logits = false;
    options.rewards = true;
    auto out = (*model)->Forward(input, mask, options);
    EXPECT_TRUE(out.ok()) << out.status();
    scores.push_back(out.ok() ? out->rewards[0].item<float>() : NAN);
  }
  return scores;
}

float MaxAbsDiff(const v1::ScoreResponse& response, const std::vector<float>& expected) {
  EXPECT_EQ(static_cast<size_t>(response.scores_size()), expected.size());
  if (static_cast<size_t>(response.scores_size()) != expected.size()) return 1e9f;
  float worst = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    worst = std::max(worst, std::abs(response.scores(static_cast<int>(i)) - expected[i]));
  }
  return worst;
}

class RewardScoringTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::MakeTempDir("reward"); }

  void TearDown() override {
    if (server_) server_->Shutdown();
    if (engine_) engine_->Shutdown();
  }

  // Starts the engine and a server with the reward service on 127.0.0.1 (ephemeral gRPC and metrics ports).
  void StartServer(reward::RewardEngineOptions options) {
    auto engine = reward::RewardEngine::Create(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
    registry_ = std::make_shared<prometheus::Registry>();
    metrics_ = std::make_unique<reward::RewardMetrics>(*registry_);
    service_ = std::make_unique<reward::RewardScoringServiceImpl>(engine_.get(), metrics_.get());
    runtime::ServerOptions server_options;
    server_options.name = "reward-test";
    server_options.listen_address = "127.0.0.1:0";
    server_options.metrics_address = "127.0.0.1:0";
    auto server = runtime::Server::Start(server_options, {{"rlhf.v1.RewardScoringService", service_.get()}}, registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    runtime::ClientOptions client;
    client.target = "127.0.0.1:" + std::to_string(server_->port());
    channel_ = *runtime::MakeChannel(client);
    stub_ = v1::RewardScoringService::NewStub(channel_);
  }

  static std::string FixtureDir(const std::string& name) {
    return EnvOr("RLHF_FIXTURES_DIR", EnvOr("RLHF_SOURCE_DIR", RLHF_TEST_DEFAULT_SOURCE_DIR) + "/../shared/fixtures") +
           "/" + name;
  }

  // Scores the rows of a reward fixture's expected.safetensors through Score and through ScoreStream, each row as
  // (first token, the rest up to its padding), and compares them with the fixture's scores (transformers').
  void ExpectFixtureScores(const std::string& fixture) {
    auto expected = model::SafetensorsFile::Open(fixture + "/expected.safetensors");
    ASSERT_TRUE(expected.ok()) << expected.status();
    at::Tensor ids = *(*expected)->Get("input_ids");
    at::Tensor mask = *(*expected)->Get("attention_mask");
    at::Tensor scores = *(*expected)->Get("scores");
    ASSERT_EQ(ids.dim(), 2);
    std::vector<v1::ScoreItem> items;
    for (int64_t r = 0; r < ids.size(0); ++r) {
      std::vector<int> tokens;
      for (int64_t t = 0; t < ids.size(1); ++t) {
        if (mask[r][t].item<int64_t>() == 1) tokens.push_back(static_cast<int>(ids[r][t].item<int64_t>()));
      }
      ASSERT_GE(tokens.size(), 2u);
      // Any split scores the same sequence: the first token as the prompt, the rest as the response.
      items.push_back(Tokens({tokens[0]}, std::vector<int>(tokens.begin() + 1, tokens.end())));
    }
    v1::ScoreResponse response;
    const grpc::Status status = Score(Request(items), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.scores_size(), scores.size(0));
    for (int i = 0; i < response.scores_size(); ++i) {
      EXPECT_NEAR(response.scores(i), scores[i].item<float>(), 1e-4f) << "row " << i;
    }
    EXPECT_EQ(response.normalization_bias(), 0.0f);
    // ScoreStream: one item per message, in order.
    auto context = runtime::ContextWithTimeout(absl::Seconds(60));
    auto stream = stub_->ScoreStream(context.get());
    for (size_t i = 0; i < items.size(); ++i) ASSERT_TRUE(stream->Write(Request({items[i]}, absl::StrCat(i))));
    stream->WritesDone();
    v1::ScoreResponse one;
    int64_t row = 0;
    while (stream->Read(&one)) {
      ASSERT_FALSE(one.has_error()) << one.error().message();
      ASSERT_EQ(one.scores_size(), 1);
      EXPECT_NEAR(one.scores(0), scores[row].item<float>(), 1e-4f) << "streamed row " << row;
      ++row;
    }
    ASSERT_TRUE(stream->Finish().ok());
    EXPECT_EQ(row, scores.size(0));
    grpc::ClientContext info_context;
    v1::ModelInfo info;
    ASSERT_TRUE(stub_->GetModelInfo(&info_context, {}, &info).ok());
    EXPECT_EQ(info.reward_normalization_bias(), 0.0f);
    auto config = model::ModelConfig::FromFile(fixture + "/config.json");
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(info.config().vocab_size(), config->vocab_size);
  }

  reward::RewardEngineOptions Options(const std::string& model_dir) {
    reward::RewardEngineOptions options;
    options.model.model_dir = model_dir;
    options.queue.max_batch_rows = 8;
    auto roots = util::PathRoots::Create({dir_}, "--path_roots");  // what --allow_reload may load from
    EXPECT_TRUE(roots.ok()) << roots.status();
    if (roots.ok()) options.model.path_roots = *std::move(roots);
    return options;
  }

  grpc::Status Score(const v1::ScoreRequest& request, v1::ScoreResponse* response,
                     absl::Duration timeout = absl::Seconds(30)) {
    auto context = runtime::ContextWithTimeout(timeout);
    return stub_->Score(context.get(), request, response);
  }

  absl::StatusOr<v1::ReloadModelResponse> Reload(const std::string& path) {
    auto context = runtime::ContextWithTimeout(absl::Seconds(30));
    v1::ReloadModelRequest request;
    request.set_checkpoint_path(path);
    v1::ReloadModelResponse response;
    const grpc::Status status = stub_->ReloadModel(context.get(), request, &response);
    if (!status.ok()) return runtime::FromGrpcStatus(status);
    return response;
  }

  std::string Metrics() {
    auto text = testing::HttpGet(server_->metrics_port(), "/metrics");
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? *text : "";
  }

  // Waits (bounded) until `condition` holds.
  static bool Eventually(const std::function<bool()>& condition, absl::Duration limit = absl::Seconds(30)) {
    const absl::Time end = absl::Now() + limit;
    while (absl::Now() < end) {
      if (condition()) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return condition();
  }

  std::string dir_;
  std::unique_ptr<reward::RewardEngine> engine_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<reward::RewardMetrics> metrics_;
  std::unique_ptr<reward::RewardScoringServiceImpl> service_;
  std::unique_ptr<runtime::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::RewardScoringService::Stub> stub_;
};

TEST_F(RewardScoringTest, ScoresEqualInProcessRewardsForTokensAndText) {
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(dir_ + "/rm", 1, 0.25f));
  ASSERT_NO_FATAL_FAILURE(StartServer(Options(dir_ + "/rm")));
  const auto request = Request({Tokens({72, 105}, {33, 256}), Text("Hello", " world"), Tokens({1}, {}),
                                Tokens({10, 20, 30, 40, 50, 60, 70}, {80, 90}), Text("How are you?", "Fine.")},
                               "req-7");
  v1::ScoreResponse response;
  const grpc::Status status = Score(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.model_id().name(), "rm");
  EXPECT_EQ(response.model_id().version(), 1);
  EXPECT_EQ(response.request_id(), "req-7");
  EXPECT_FLOAT_EQ(response.normalization_bias(), 0.25f);
  EXPECT_FALSE(response.has_error());
  const std::vector<float> expected = InProcessScores(dir_ + "/rm", request);
  EXPECT_LT(MaxAbsDiff(response, expected), 1e-5f);
  // The head is not trivial: the items score differently.
  EXPECT_GT(std::abs(expected[0] - expected[1]), 1e-3f);
  // A text response is scored with EOS appended: the same as its token ids plus 256.
  v1::ScoreResponse as_tokens;
  ASSERT_TRUE(
      Score(Request({Tokens({'H', 'e', 'l', 'l', 'o'}, {' ', 'w', 'o', 'r', 'l', 'd', 256})}), &as_tokens).ok());
  EXPECT_NEAR(as_tokens.scores(0), response.scores(1), 1e-5f);

  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.role(), v1::MODEL_ROLE_REWARD);
  EXPECT_FLOAT_EQ(info.reward_normalization_bias(), 0.25f);
  EXPECT_EQ(info.model_id().version(), 1);
  EXPECT_EQ(info.tokenizer().eos_token_id(), 256);
  EXPECT_EQ(info.config().n_positions(), 96);

  const std::string metrics = Metrics();
  EXPECT_THAT(metrics, HasSubstr("rlhf_reward_score_count 6"));
  EXPECT_THAT(metrics, HasSubstr("rlhf_reward_rows_total 6"));
  EXPECT_THAT(metrics, HasSubstr("rlhf_reward_batch_rows_count"));
  EXPECT_THAT(metrics, HasSubstr("rlhf_reward_seconds_per_token_count"));
  EXPECT_THAT(metrics, HasSubstr("rlhf_model_version{service=\"reward-scoring\"} 1"));
}

TEST_F(RewardScoringTest, HuggingFaceCheckpointScoresMatchTransformersWithBiasZero) {
  const std::string fixture = FixtureDir("gpt2-tiny-rm");
  ASSERT_NO_FATAL_FAILURE(StartServer(Options(fixture)));
  ASSERT_NO_FATAL_FAILURE(ExpectFixtureScores(fixture));
  // No tokenizer files: text is refused, naming the field.
  v1::ScoreResponse text_response;
  const grpc::Status text = Score(Request({Tokens({1}, {2}), Text("a", "b")}), &text_response);
  EXPECT_EQ(text.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(text.error_message(), HasSubstr("items[1].prompt.text: this model has no tokenizer"));
}

// Other teams' reward models: Qwen2ForSequenceClassification (GQA, q/k/v biases, pad_token_id pooling).
TEST_F(RewardScoringTest, Qwen2SequenceClassifierScoresMatchTransformers) {
  const std::string fixture = FixtureDir("qwen2-tiny-rm");
  ASSERT_NO_FATAL_FAILURE(StartServer(Options(fixture)));
  ASSERT_NO_FATAL_FAILURE(ExpectFixtureScores(fixture));
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.config().model_type(), "qwen2");
  EXPECT_EQ(info.role(), v1::MODEL_ROLE_REWARD);
}

TEST_F(RewardScoringTest, HotReloadUnderConcurrentLoadNeverMixesVersions) {
  const std::string watch = dir_ + "/checkpoints";
  ASSERT_TRUE(util::MakeDirectories(watch).ok());
  ASSERT_NO_FATAL_FAILURE(PublishCheckpoint(watch, "rm-001", 1, 0.1f));
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(dir_ + "/elsewhere", 3, 0.3f));
  auto options = Options("");
  options.watch_dir = watch;
  options.watch_interval = absl::Milliseconds(50);
  options.allow_reload = true;  // reloads by path beside the watched folder
  ASSERT_NO_FATAL_FAILURE(StartServer(options));

  const std::vector<v1::ScoreRequest> requests = {
      Request({Tokens({5, 6, 7}, {8, 9, 256}), Tokens({1}, {2})}),
      Request({Text("What is 2+2?", "4"), Tokens({100, 101, 102, 103}, {104}), Tokens({33}, {34, 35, 36, 37})}),
      Request({Text("Name a colour.", "Blue.")}),
  };
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::mutex mu;
  std::vector<std::pair<int, v1::ScoreResponse>> responses;  // (request index, response)
  std::vector<std::thread> clients;
  for (int c = 0; c < 3; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; !stop.load() && i < 5000; ++i) {
        const int which = (c + i) % static_cast<int>(requests.size());
        v1::ScoreResponse response;
        const grpc::Status status = Score(requests[static_cast<size_t>(which)], &response);
        if (!status.ok()) {
          ++failures;
          ADD_FAILURE() << status.error_message();
          continue;
        }
        std::lock_guard<std::mutex> lock(mu);
        responses.emplace_back(which, std::move(response));
      }
    });
  }
  auto served = [&](int64_t version) {
    return Eventually([&] {
      std::lock_guard<std::mutex> lock(mu);
      int seen = 0;
      for (const auto& [which, response] : responses) seen += response.model_id().version() == version;
      return seen >= 5;
    });
  };
  EXPECT_TRUE(served(1));
  // The watcher finds a newer checkpoint.
  ASSERT_NO_FATAL_FAILURE(PublishCheckpoint(watch, "rm-002", 2, -0.2f));
  EXPECT_TRUE(served(2));
  // A caller reloads another checkpoint by path.
  auto reloaded = Reload(dir_ + "/elsewhere");
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reloaded->outcome(), v1::RELOAD_OUTCOME_RELOADED);
  EXPECT_EQ(reloaded->previous_model_id().version(), 2);
  EXPECT_EQ(reloaded->model_id().version(), 3);
  EXPECT_EQ(reloaded->model_id().name(), "checkpoints");
  EXPECT_FLOAT_EQ(reloaded->normalization_bias(), 0.3f);
  EXPECT_TRUE(served(3));
  // The watcher leaves it alone until the trainer writes a newer checkpoint.
  absl::SleepFor(absl::Milliseconds(300));
  {
    grpc::ClientContext context;
    v1::ModelInfo info;
    ASSERT_TRUE(stub_->GetModelInfo(&context, {}, &info).ok());
    EXPECT_EQ(info.model_id().version(), 3);
    EXPECT_THAT(info.source_path(), HasSubstr("elsewhere"));
  }
  ASSERT_NO_FATAL_FAILURE(PublishCheckpoint(watch, "rm-003", 4, 0.05f));
  EXPECT_TRUE(served(4));
  stop = true;
  for (auto& client : clients) client.join();
  EXPECT_EQ(failures.load(), 0);

  // Every response was computed entirely by the version it names.
  const std::map<int64_t, std::pair<std::string, float>> versions = {{1, {watch + "/rm-001", 0.1f}},
                                                                     {2, {watch + "/rm-002", -0.2f}},
                                                                     {3, {dir_ + "/elsewhere", 0.3f}},
                                                                     {4, {watch + "/rm-003", 0.05f}}};
  std::map<std::pair<int64_t, int>, std::vector<float>> expected;
  for (const auto& [version, source] : versions) {
    for (size_t r = 0; r < requests.size(); ++r) {
      expected[{version, static_cast<int>(r)}] = InProcessScores(source.first, requests[r]);
    }
  }
  // The versions really differ on every item, so a mixed response could not pass.
  for (size_t r = 0; r < requests.size(); ++r) {
    for (int64_t a = 1; a <= 4; ++a) {
      for (int64_t b = a + 1; b <= 4; ++b) {
        const auto& x = expected[{a, static_cast<int>(r)}];
        const auto& y = expected[{b, static_cast<int>(r)}];
        for (size_t i = 0; i < x.size(); ++i) EXPECT_GT(std::abs(x[i] - y[i]), 1e-3f);
      }
    }
  }
  std::map<int64_t, int> seen;
  for (const auto& [which, response] : responses) {
    const int64_t version = response.model_id().version();
    ASSERT_TRUE(versions.count(version)) << version;
    ++seen[version];
    EXPECT_LT(MaxAbsDiff(response, expected[{version, which}]), 1e-5f) << "version " << version;
    EXPECT_FLOAT_EQ(response.normalization_bias(), versions.at(version).second);
  }
  for (int64_t v = 1; v <= 4; ++v) EXPECT_GT(seen[v], 0) << "version " << v;
  // Versions never go back: each client saw them in increasing order overall (responses are appended in order
  // per client, and a new version is served only after the swap).
  const std::string metrics = Metrics();
  EXPECT_THAT(metrics, HasSubstr("rlhf_model_version{service=\"reward-scoring\"} 4"));
  EXPECT_THAT(metrics, HasSubstr("rlhf_weight_updates_total{outcome=\"ok\",service=\"reward-scoring\"} 3"));
}

TEST_F(RewardScoringTest, BrokenCheckpointsAreRefusedOnceAndTheOldVersionKeepsServing) {
  const std::string watch = dir_ + "/checkpoints";
  ASSERT_TRUE(util::MakeDirectories(watch).ok());
  ASSERT_NO_FATAL_FAILURE(PublishCheckpoint(watch, "rm-001", 1, 0.5f));
  auto options = Options("");
  options.watch_dir = watch;
  options.watch_interval = absl::Milliseconds(20);
  options.allow_reload = true;  // reloads by path beside the watched folder
  ASSERT_NO_FATAL_FAILURE(StartServer(options));
  const std::string served_path = watch + "/rm-001";

  // Another architecture.
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(dir_ + "/wide", 2, 0, /*n_embd=*/48));
  auto wide = Reload(dir_ + "/wide");
  ASSERT_TRUE(wide.ok()) << wide.status();
  EXPECT_EQ(wide->outcome(), v1::RELOAD_OUTCOME_REFUSED);
  EXPECT_THAT(wide->message(), HasSubstr("hidden_size is 32 here, 48"));
  EXPECT_EQ(wide->model_id().version(), 1);
  EXPECT_EQ(wide->previous_model_id().version(), 1);
  EXPECT_FLOAT_EQ(wide->normalization_bias(), 0.5f);
  // A language model without a reward head.
  testing::TinyModelOptions lm;
  lm.seed = 2;
  ASSERT_TRUE(testing::WriteTinyModel(dir_ + "/lm", lm).ok());
  auto no_head = Reload(dir_ + "/lm");
  ASSERT_TRUE(no_head.ok());
  EXPECT_EQ(no_head->outcome(), v1::RELOAD_OUTCOME_REFUSED);
  EXPECT_THAT(no_head->message(), HasSubstr("no reward head"));
  // Corrupt tensors: a truncated weights file.
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(dir_ + "/corrupt", 2, 0));
  auto bytes = util::ReadFile(dir_ + "/corrupt/model.safetensors");
  ASSERT_TRUE(bytes.ok());
  ASSERT_TRUE(util::WriteFileAtomically(dir_ + "/corrupt/model.safetensors", bytes->substr(0, bytes->size() / 2)).ok());
  auto corrupt = Reload(dir_ + "/corrupt");
  ASSERT_TRUE(corrupt.ok());
  EXPECT_EQ(corrupt->outcome(), v1::RELOAD_OUTCOME_REFUSED);
  EXPECT_THAT(corrupt->message(), HasSubstr("model.safetensors"));
  // A header whose JSON holds bytes that are not UTF-8: the refusal quotes them, and the answer must still parse.
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(dir_ + "/garbled", 2, 0));
  ASSERT_TRUE(util::WriteFileAtomically(dir_ + "/garbled/model.safetensors",
                                        std::string("\x10\0\0\0\0\0\0\0{\"\xff\xfe\x80\": x}     ", 24))
                  .ok());
  auto garbled = Reload(dir_ + "/garbled");
  ASSERT_TRUE(garbled.ok()) << garbled.status();  // not INTERNAL "Exception deserializing response"
  EXPECT_EQ(garbled->outcome(), v1::RELOAD_OUTCOME_REFUSED);
  EXPECT_THAT(garbled->message(), HasSubstr("model.safetensors"));
  // Another tokenizer with the same architecture: EOS and padding swapped.
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(dir_ + "/retokenized", 2, 0));
  ASSERT_TRUE(util::WriteFileAtomically(dir_ + "/retokenized/tokenizer.json",
                                        R"({"type": "byte", "special_tokens": [{"id": 256, "content": "<|endoftext|>"},
                                            {"id": 257, "content": "<|pad|>"}],
                                            "eos_token": "<|pad|>", "pad_token": "<|endoftext|>"})")
                  .ok());
  auto retokenized = Reload(dir_ + "/retokenized");
  ASSERT_TRUE(retokenized.ok());
  EXPECT_EQ(retokenized->outcome(), v1::RELOAD_OUTCOME_REFUSED);
  EXPECT_THAT(retokenized->message(), HasSubstr("tokenizer differs: eos id is 256 here, 257"));

  // The watcher refuses a broken checkpoint once and does not retry it while its files stay the same.
  ASSERT_TRUE(util::MakeDirectories(watch + "/.tmp-rm-002").ok());
  ASSERT_TRUE(util::WriteFileAtomically(watch + "/.tmp-rm-002/model.safetensors", "not safetensors").ok());
  ASSERT_TRUE(util::WriteFileAtomically(watch + "/.tmp-rm-002/config.json", "{}").ok());
  ASSERT_EQ(::rename((watch + "/.tmp-rm-002").c_str(), (watch + "/rm-002").c_str()), 0);
  const std::string refused_metric = "rlhf_weight_updates_total{outcome=\"refused\",service=\"reward-scoring\"} ";
  EXPECT_TRUE(Eventually([&] { return Metrics().find(refused_metric + "6") != std::string::npos; }));
  absl::SleepFor(absl::Milliseconds(400));  // 20 polls
  EXPECT_THAT(Metrics(), HasSubstr(refused_metric + "6"));

  // Meanwhile version 1 serves, unchanged.
  const auto request = Request({Tokens({3, 4, 5}, {6, 256}), Text("ping", "pong")});
  v1::ScoreResponse response;
  ASSERT_TRUE(Score(request, &response).ok());
  EXPECT_EQ(response.model_id().version(), 1);
  EXPECT_LT(MaxAbsDiff(response, InProcessScores(served_path, request)), 1e-5f);
  auto again = Reload(served_path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->outcome(), v1::RELOAD_OUTCOME_ALREADY_CURRENT);
  EXPECT_EQ(again->model_id().version(), 1);

  // Errors that are not refusals.
  auto missing = Reload(dir_ + "/missing");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("does not exist"));
  auto file = Reload(served_path + "/config.json");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("is not a folder"));

  // Once the trainer writes a good checkpoint, the watcher serves it; the broken one is not retried.
  ASSERT_NO_FATAL_FAILURE(PublishCheckpoint(watch, "rm-003", 3, -0.5f));
  EXPECT_TRUE(Eventually([&] {
    v1::ScoreResponse r;
    return Score(request, &r).ok() && r.model_id().version() == 2;
  }));
  ASSERT_TRUE(Score(request, &response).ok());
  EXPECT_LT(MaxAbsDiff(response, InProcessScores(watch + "/rm-003", request)), 1e-5f);
  EXPECT_FLOAT_EQ(response.normalization_bias(), -0.5f);
  // ReloadModel with no path considers the newest checkpoint of the watched folder: the one served.
  auto newest = Reload("");
  ASSERT_TRUE(newest.ok());
  EXPECT_EQ(newest->outcome(), v1::RELOAD_OUTCOME_ALREADY_CURRENT);
  EXPECT_EQ(newest->checkpoint_path(), watch + "/rm-003");
  const std::string metrics = Metrics();
  EXPECT_THAT(metrics, HasSubstr(refused_metric + "6"));
  EXPECT_THAT(metrics, HasSubstr("rlhf_weight_updates_total{outcome=\"ok\",service=\"reward-scoring\"} 1"));
}

TEST_F(RewardScoringTest, StartsWithoutAModelAndServesOnceACheckpointAppears) {
  const std::string watch = dir_ + "/checkpoints";
  ASSERT_TRUE(util::MakeDirectories(watch).ok());
  auto options = Options("");
  options.watch_dir = watch;
  options.watch_interval = absl::Milliseconds(30);
  ASSERT_NO_FATAL_FAILURE(StartServer(options));
  v1::ScoreResponse response;
  const grpc::Status empty = Score(Request({Tokens({1}, {2})}), &response);
  EXPECT_EQ(empty.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(empty.error_message(), HasSubstr("no reward model is loaded yet"));
  {
    grpc::ClientContext context;
    v1::ModelInfo info;
    EXPECT_EQ(stub_->GetModelInfo(&context, {}, &info).error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  EXPECT_EQ(Reload("").status().code(), absl::StatusCode::kNotFound);
  // A checkpoint still being written (hidden name) is ignored.
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(watch + "/.tmp-rm-001", 1, 0));
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(Score(Request({Tokens({1}, {2})}), &response).error_code(), grpc::StatusCode::UNAVAILABLE);
  ASSERT_EQ(::rename((watch + "/.tmp-rm-001").c_str(), (watch + "/rm-001").c_str()), 0);
  EXPECT_TRUE(Eventually([&] { return Score(Request({Tokens({1}, {2})}), &response).ok(); }));
  EXPECT_EQ(response.model_id().version(), 1);
  EXPECT_EQ(response.model_id().name(), "checkpoints");
}

TEST_F(RewardScoringTest, ReloadIsRefusedWhenDisabled) {
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(dir_ + "/rm", 1, 0));
  ASSERT_NO_FATAL_FAILURE(StartServer(Options(dir_ + "/rm")));
  auto reload = Reload(dir_ + "/rm");
  EXPECT_EQ(reload.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(reload.status().message()), HasSubstr("--allow_reload"));
}

// --watch alone lets ReloadModel load only the watched folder's checkpoints; --allow_reload adds --path_roots.
TEST_F(RewardScoringTest, ReloadLoadsOnlyFromTheWatchedFolderWithoutAllowReload) {
  const std::string watch = dir_ + "/watched";
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(watch + "/rm-001", 1, 0));
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(dir_ + "/elsewhere", 2, 0));
  auto options = Options("");
  options.watch_dir = watch;
  ASSERT_NO_FATAL_FAILURE(StartServer(options));
  for (const std::string& path : {dir_ + "/elsewhere", watch + "/../elsewhere", std::string("/")}) {
    auto reload = Reload(path);
    EXPECT_EQ(reload.status().code(), absl::StatusCode::kPermissionDenied) << path;
    EXPECT_THAT(std::string(reload.status().message()), HasSubstr("checkpoint_path")) << path;
  }
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(watch + "/rm-002", 3, 0));
  auto inside = Reload(watch + "/rm-002");
  ASSERT_TRUE(inside.ok()) << inside.status();
  EXPECT_EQ(inside->outcome(), v1::RELOAD_OUTCOME_RELOADED);
}

TEST_F(RewardScoringTest, AllowReloadWithoutPathRootsIsRefusedAtStart) {
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(dir_ + "/rm", 1, 0));
  auto options = Options(dir_ + "/rm");
  options.allow_reload = true;
  options.model.path_roots = util::PathRoots();
  auto engine = reward::RewardEngine::Create(options);
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(engine.status().message()), HasSubstr("--path_roots"));
}

TEST_F(RewardScoringTest, AllowReloadLoadsCheckpointsUnderThePathRoots) {
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(dir_ + "/rm", 1, 0));
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(dir_ + "/rm2", 2, 1.5f));
  auto options = Options(dir_ + "/rm");
  options.allow_reload = true;
  ASSERT_NO_FATAL_FAILURE(StartServer(options));
  EXPECT_EQ(Reload("").status().code(), absl::StatusCode::kInvalidArgument);  // no watched folder
  EXPECT_EQ(Reload("/").status().code(), absl::StatusCode::kPermissionDenied);  // outside --path_roots
  auto reload = Reload(dir_ + "/rm2");
  ASSERT_TRUE(reload.ok()) << reload.status();
  EXPECT_EQ(reload->outcome(), v1::RELOAD_OUTCOME_RELOADED);
  EXPECT_EQ(reload->model_id().version(), 2);
  EXPECT_EQ(reload->model_id().name(), "rm");
  const auto request = Request({Tokens({9, 8, 7}, {6})}, "r");
  v1::ScoreResponse response;
  ASSERT_TRUE(Score(request, &response).ok());
  EXPECT_EQ(response.model_id().version(), 2);
  EXPECT_LT(MaxAbsDiff(response, InProcessScores(dir_ + "/rm2", request)), 1e-5f);
  // A checkpoint rewritten in place is a new one.
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(dir_ + "/rm2", 5, -1.0f));
  reload = Reload(dir_ + "/rm2");
  ASSERT_TRUE(reload.ok());
  EXPECT_EQ(reload->outcome(), v1::RELOAD_OUTCOME_RELOADED);
  EXPECT_EQ(reload->model_id().version(), 3);
  EXPECT_FLOAT_EQ(reload->normalization_bias(), -1.0f);
}

TEST_F(RewardScoringTest, BadRequestsGetInvalidArgumentNamingTheField) {
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(dir_ + "/rm", 1, 0));
  auto options = Options(dir_ + "/rm");
  options.max_items = 6;
  ASSERT_NO_FATAL_FAILURE(StartServer(options));
  struct Case {
    v1::ScoreRequest request;
    std::string message;
  };
  std::vector<Case> cases;
  cases.push_back({v1::ScoreRequest(), "items is empty"});
  cases.push_back({Request({Tokens({1}, {2}), Tokens({1}, {2}), Tokens({3}, {4, 300})}),
                   "items[2].response.token_ids[1]=300 is outside the vocabulary [0, 258)"});
  cases.push_back({Request({Tokens({1, -5}, {2})}), "items[0].prompt.token_ids[1]=-5 is outside the vocabulary"});
  cases.push_back({Request({Tokens({}, {2})}), "items[0].prompt.token_ids is empty"});
  cases.push_back({Request({Text("", "x")}), "items[0].prompt.text is empty"});
  v1::ScoreItem no_response;
  no_response.mutable_prompt()->set_text("hi");
  cases.push_back({Request({Tokens({1}, {2}), no_response}), "items[1].response has neither text nor token_ids"});
  cases.push_back({Request({v1::ScoreItem()}), "items[0].prompt has neither text, token_ids nor messages"});
  cases.push_back({Request({Tokens({1}, {2}), Tokens(std::vector<int>(50, 7), std::vector<int>(50, 8))}),
                   "items[1] has 100 tokens (prompt 50 + response 50), more than the model's max_position_embeddings=96"});
  cases.push_back({Request({Text(std::string(60, 'a'), std::string(40, 'b'))}),
                   "items[0] has 101 tokens (prompt 60 + response 41)"});
  cases.push_back(
      {Request(std::vector<v1::ScoreItem>(7, Tokens({1}, {2}))), "items has 7 entries, more than the limit 6"});
  cases.push_back(
      {Request({Tokens({1}, {2})}, std::string(129, 'r')), "request_id has 129 bytes, more than the limit 128"});
  for (const auto& c : cases) {
    v1::ScoreResponse response;
    const grpc::Status status = Score(c.request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.message;
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  }
  auto stale = Request({Tokens({1}, {2})});
  stale.set_min_model_version(2);
  v1::ScoreResponse response;
  const grpc::Status status = Score(stale, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("min_model_version=2 is above the served version 1"));
  stale.set_min_model_version(1);
  EXPECT_TRUE(Score(stale, &response).ok());
}

TEST_F(RewardScoringTest, ExpiredRequestsAreDroppedBeforeTheyCostCompute) {
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(dir_ + "/rm", 1, 0));
  auto options = Options(dir_ + "/rm");
  options.max_items = 4096;
  ASSERT_NO_FATAL_FAILURE(StartServer(options));
  // The engine holds queued work while paused: one large request (64 forward passes of 8 rows) and six small ones
  // whose deadline passes while they wait. Their callers see DEADLINE_EXCEEDED before the engine resumes.
  engine_->SetPausedForTesting(true);
  std::vector<v1::ScoreItem> many(512, Tokens(std::vector<int>(40, 3), std::vector<int>(40, 4)));
  auto busy = std::async(std::launch::async, [&] {
    v1::ScoreResponse response;
    return Score(Request(many), &response, absl::Seconds(60));
  });
  ASSERT_TRUE(Eventually([&] { return engine_->queue_depth() == 1; }));
  std::vector<std::future<grpc::Status>> late;
  for (int i = 0; i < 6; ++i) {
    late.push_back(std::async(std::launch::async, [&] {
      v1::ScoreResponse response;
      return Score(Request({Tokens({1}, {2}), Tokens({3}, {4}), Tokens({5}, {6})}), &response,
                   absl::Milliseconds(500));
    }));
  }
  for (auto& f : late) EXPECT_EQ(f.get().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  engine_->SetPausedForTesting(false);
  const grpc::Status busy_status = busy.get();
  ASSERT_TRUE(busy_status.ok()) << busy_status.error_message();
  EXPECT_TRUE(Eventually([&] { return engine_->queue_depth() == 0; }));
  // Only the busy request's rows were computed.
  EXPECT_THAT(Metrics(), HasSubstr("rlhf_reward_rows_total 512"));
  v1::ScoreResponse response;
  EXPECT_TRUE(Score(Request({Tokens({1}, {2})}), &response).ok());
}

TEST_F(RewardScoringTest, FullQueueAnswersResourceExhausted) {
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(dir_ + "/rm", 1, 0));
  auto options = Options(dir_ + "/rm");
  options.queue.max_queued = 2;
  options.queue.max_batch_rows = 1;
  options.max_items = 256;
  ASSERT_NO_FATAL_FAILURE(StartServer(options));
  std::vector<v1::ScoreItem> items(64, Tokens(std::vector<int>(40, 3), std::vector<int>(40, 4)));
  std::vector<std::future<grpc::Status>> calls;
  for (int i = 0; i < 24; ++i) {
    calls.push_back(std::async(std::launch::async, [&] {
      v1::ScoreResponse response;
      return Score(Request(items), &response, absl::Seconds(60));
    }));
  }
  int exhausted = 0, ok = 0;
  for (auto& f : calls) {
    const grpc::Status status = f.get();
    if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++exhausted;
      EXPECT_THAT(status.error_message(), HasSubstr("queue is full"));
    } else if (status.ok()) {
      ++ok;
    }
  }
  EXPECT_GT(exhausted, 0);
  EXPECT_GT(ok, 0);
  EXPECT_EQ(exhausted + ok, 24);
}

TEST_F(RewardScoringTest, ScoreStreamAnswersEachRequestInOrderWithPerMessageErrors) {
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(dir_ + "/rm", 1, 0.75f));
  ASSERT_NO_FATAL_FAILURE(StartServer(Options(dir_ + "/rm")));
  std::vector<v1::ScoreRequest> requests;
  requests.push_back(Request({Tokens({1, 2}, {3})}, "a"));
  requests.push_back(Request({Tokens({1}, {2}), Tokens({1}, {999})}, "b"));  // bad token id
  requests.push_back(Request({Text("Hi", "there")}, "c"));
  auto stale = Request({Tokens({4}, {5})}, "d");
  stale.set_min_model_version(9);
  requests.push_back(stale);
  requests.push_back(v1::ScoreRequest());  // empty batch
  // Many small requests pipelined on the same stream (more than the per-stream in-flight limit).
  for (int i = 0; i < 150; ++i) requests.push_back(Request({Tokens({i % 250 + 1}, {7, 256})}, absl::StrCat("m", i)));

  auto context = runtime::ContextWithTimeout(absl::Seconds(60));
  auto stream = stub_->ScoreStream(context.get());
  std::thread writer([&] {
    for (const auto& request : requests) {
      if (!stream->Write(request)) break;
    }
    stream->WritesDone();
  });
  std::vector<v1::ScoreResponse> responses;
  v1::ScoreResponse response;
  while (stream->Read(&response)) responses.push_back(response);
  writer.join();
  const grpc::Status status = stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(responses.size(), requests.size());
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(responses[i].request_id(), requests[i].request_id());
  EXPECT_FALSE(responses[0].has_error());
  EXPECT_LT(MaxAbsDiff(responses[0], InProcessScores(dir_ + "/rm", requests[0])), 1e-5f);
  EXPECT_FLOAT_EQ(responses[0].normalization_bias(), 0.75f);
  EXPECT_EQ(responses[0].model_id().version(), 1);
  ASSERT_TRUE(responses[1].has_error());
  EXPECT_EQ(responses[1].error().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(responses[1].error().message(), HasSubstr("items[1].response.token_ids[0]=999"));
  EXPECT_EQ(responses[1].scores_size(), 0);
  EXPECT_FALSE(responses[2].has_error());
  EXPECT_LT(MaxAbsDiff(responses[2], InProcessScores(dir_ + "/rm", requests[2])), 1e-5f);
  ASSERT_TRUE(responses[3].has_error());
  EXPECT_EQ(responses[3].error().code(), static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION));
  ASSERT_TRUE(responses[4].has_error());
  EXPECT_THAT(responses[4].error().message(), HasSubstr("items is empty"));
  for (size_t i = 5; i < requests.size(); ++i) {
    ASSERT_FALSE(responses[i].has_error()) << responses[i].error().message();
    ASSERT_EQ(responses[i].scores_size(), 1);
  }
  // Spot-check a pipelined answer against the in-process score of its own request.
  EXPECT_LT(MaxAbsDiff(responses[100], InProcessScores(dir_ + "/rm", requests[100])), 1e-5f);
}

TEST_F(RewardScoringTest, ScoreStreamEndsWithDeadlineExceededWhenTheCallExpires) {
  ASSERT_NO_FATAL_FAILURE(WriteRewardModel(dir_ + "/rm", 1, 0));
  ASSERT_NO_FATAL_FAILURE(StartServer(Options(dir_ + "/rm")));
  auto context = runtime::ContextWithTimeout(absl::Milliseconds(300));
  auto stream = stub_->ScoreStream(context.get());
  ASSERT_TRUE(stream->Write(Request({Tokens({1}, {2})}, "x")));
  v1::ScoreResponse response;
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.request_id(), "x");
  // The client neither writes nor closes: the call's deadline ends the stream.
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The server still serves.
  EXPECT_TRUE(Score(Request({Tokens({1}, {2})}), &response).ok());
}

}  // namespace
}  // namespace rlhf
