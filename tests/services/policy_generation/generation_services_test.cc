// Policy generation and reference log-probs over real gRPC on loopback, on tiny random models.
#include <atomic>
#include <cmath>
#include <future>
#include <thread>

#include "common/model/safetensors.h"
#include "common/runtime/client.h"
#include "common/runtime/server.h"
#include "common/serving/engine_metrics.h"
#include "common/util/path_roots.h"
#include "common/serving/weights_transfer.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/policy_generation/generation_engine.h"
#include "services/policy_generation/policy_generation_service_impl.h"
#include "services/reference_logprob/reference_engine.h"
#include "services/reference_logprob/reference_logprob_service_impl.h"
#include "tests/testing/test_util.h"
#include "tests/testing/tiny_model.h"

namespace rlhf {
namespace {

using ::testing::HasSubstr;

// Two versions of a tiny policy (different seeds), a generation server on v1 and reference servers on v1 and v2.
class GenerationServicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("gen");
    testing::TinyModelOptions v1_options;
    v1_options.seed = 1;
    ASSERT_TRUE(testing::WriteTinyModel(dir_ + "/v1", v1_options).ok());
    testing::TinyModelOptions v2_options;
    v2_options.seed = 2;
    ASSERT_TRUE(testing::WriteTinyModel(dir_ + "/v2", v2_options).ok());

    generation::GenerationEngineOptions gen_options;
    gen_options.model.model_dir = dir_ + "/v1";
    gen_options.model.model_name = "policy";
    auto roots = util::PathRoots::Create({dir_}, "--path_roots");
    ASSERT_TRUE(roots.ok()) << roots.status();
    gen_options.model.path_roots = *roots;
    gen_options.queue.max_batch_rows = 8;
    gen_options.queue.max_queued = 8;
    gen_options.max_new_tokens = 48;
    auto engine = generation::GenerationEngine::Create(gen_options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    gen_engine_ = *std::move(engine);
    for (const char* version : {"v1", "v2"}) {
      reference::ReferenceEngineOptions ref_options;
      ref_options.model.model_dir = dir_ + "/" + version;
      auto ref = reference::ReferenceEngine::Create(ref_options);
      ASSERT_TRUE(ref.ok()) << ref.status();
      ref_engines_.push_back(*std::move(ref));
    }
    registry_ = std::make_shared<prometheus::Registry>();
    gen_metrics_ = std::make_unique<serving::EngineMetrics>(*registry_, "generation", "policy-generation");
    ref_metrics_ = std::make_unique<serving::EngineMetrics>(*registry_, "reference", "reference-logprob");
    gen_service_ =
        std::make_unique<generation::PolicyGenerationServiceImpl>(gen_engine_.get(), gen_metrics_.get(), 1 << 26);
    ref_service_ = std::make_unique<reference::ReferenceLogprobServiceImpl>(ref_engines_[0].get(), ref_metrics_.get());
    runtime::ServerOptions server_options;
    server_options.name = "generation-test";
    server_options.listen_address = "127.0.0.1:0";
    server_options.metrics_address = "127.0.0.1:0";
    auto server = runtime::Server::Start(server_options,
                                         {{"rlhf.v1.PolicyGenerationService", gen_service_.get()},
                                          {"rlhf.v1.ReferenceLogprobService", ref_service_.get()}},
                                         registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    runtime::ClientOptions client;
    client.target = "127.0.0.1:" + std::to_string(server_->port());
    channel_ = *runtime::MakeChannel(client);
    gen_ = v1::PolicyGenerationService::NewStub(channel_);
    ref_ = v1::ReferenceLogprobService::NewStub(channel_);
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
    if (gen_engine_) gen_engine_->Shutdown();
    for (auto& engine : ref_engines_) engine->Shutdown();
  }

  static v1::GenerateRequest Request(const std::vector<std::vector<int>>& prompts, int num_samples, uint64_t seed,
                                     int max_new_tokens = 16) {
    v1::GenerateRequest request;
    for (const auto& prompt : prompts) {
      request.add_prompts()->mutable_token_ids()->mutable_ids()->Add(prompt.begin(), prompt.end());
    }
    request.set_num_samples(num_samples);
    request.mutable_sampling()->set_seed(seed);
    request.mutable_sampling()->set_max_new_tokens(max_new_tokens);
    return request;
  }

  grpc::Status Generate(const v1::GenerateRequest& request, v1::GenerateResponse* response,
                        absl::Duration timeout = absl::Seconds(60)) {
    auto context = runtime::ContextWithTimeout(timeout);
    return gen_->Generate(context.get(), request, response);
  }

  grpc::Status LogProbs(const v1::LogProbsRequest& request, v1::LogProbsResponse* response) {
    auto context = runtime::ContextWithTimeout(absl::Seconds(60));
    return ref_->LogProbs(context.get(), request, response);
  }

  // Log-probs of every completion of `response` under reference engine `version` (1 or 2), in order.
  std::vector<std::vector<float>> ReferenceLogProbs(const v1::GenerateResponse& response, int version,
                                                    double temperature = 1.0) {
    reference::LogProbsRequest request;
    request.temperature = temperature;
    for (const auto& result : response.results()) {
      for (const auto& completion : result.completions()) {
        model::ScoreRequest row;
        row.prompt.assign(result.prompt_token_ids().begin(), result.prompt_token_ids().end());
        row.response.assign(completion.token_ids().begin(), completion.token_ids().end());
        request.sequences.push_back(row);
      }
    }
    std::promise<absl::StatusOr<reference::LogProbsResult>> promise;
    ref_engines_[version - 1]->Submit(std::move(request),
                                      [&](absl::StatusOr<reference::LogProbsResult> r) { promise.set_value(r); });
    auto result = promise.get_future().get();
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? result->logprobs : std::vector<std::vector<float>>{};
  }

  static float MaxAbsDiff(const v1::GenerateResponse& response, const std::vector<std::vector<float>>& expected) {
    float worst = 0;
    size_t row = 0;
    for (const auto& result : response.results()) {
      for (const auto& completion : result.completions()) {
        EXPECT_LT(row, expected.size());
        if (row >= expected.size()) return 1e9f;
        EXPECT_EQ(static_cast<size_t>(completion.logprobs_size()), expected[row].size());
        for (int t = 0; t < completion.logprobs_size() && t < static_cast<int>(expected[row].size()); ++t) {
          worst = std::max(worst, std::abs(completion.logprobs(t) - expected[row][static_cast<size_t>(t)]));
        }
        ++row;
      }
    }
    return worst;
  }

  std::string dir_;
  std::unique_ptr<generation::GenerationEngine> gen_engine_;
  std::vector<std::unique_ptr<reference::ReferenceEngine>> ref_engines_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<serving::EngineMetrics> gen_metrics_, ref_metrics_;
  std::unique_ptr<generation::PolicyGenerationServiceImpl> gen_service_;
  std::unique_ptr<reference::ReferenceLogprobServiceImpl> ref_service_;
  std::unique_ptr<runtime::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::PolicyGenerationService::Stub> gen_;
  std::unique_ptr<v1::ReferenceLogprobService::Stub> ref_;
};

TEST_F(GenerationServicesTest, GenerationWithAFixedSeedIsRepeatable) {
  const auto request = Request({{72, 105}, {65, 66, 67, 68, 69}}, 3, 1234);
  v1::GenerateResponse first, second, other;
  ASSERT_TRUE(Generate(request, &first).ok());
  ASSERT_TRUE(Generate(request, &second).ok());
  EXPECT_EQ(first.model_id().name(), "policy");
  EXPECT_EQ(first.model_id().version(), 1);
  ASSERT_EQ(first.results_size(), 2);
  ASSERT_EQ(first.results(0).completions_size(), 3);
  EXPECT_EQ(first.results().Get(1).prompt_token_ids_size(), 5);
  for (int p = 0; p < 2; ++p) {
    for (int s = 0; s < 3; ++s) {
      const auto& a = first.results(p).completions(s);
      const auto& b = second.results(p).completions(s);
      EXPECT_THAT(b.token_ids(), ::testing::ElementsAreArray(a.token_ids()));
      EXPECT_THAT(b.logprobs(), ::testing::ElementsAreArray(a.logprobs()));
      EXPECT_EQ(a.token_ids_size(), a.logprobs_size());
      EXPECT_NE(a.finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
    }
  }
  // Samples of one prompt differ from each other, and another seed gives other samples.
  EXPECT_THAT(first.results(0).completions(0).token_ids(),
              ::testing::Not(::testing::ElementsAreArray(first.results(0).completions(1).token_ids())));
  ASSERT_TRUE(Generate(Request({{72, 105}, {65, 66, 67, 68, 69}}, 3, 999), &other).ok());
  EXPECT_THAT(other.results(0).completions(0).token_ids(),
              ::testing::Not(::testing::ElementsAreArray(first.results(0).completions(0).token_ids())));
}

TEST_F(GenerationServicesTest, GenerateLogProbsEqualReferenceLogProbs) {
  for (const float temperature : {1.0f, 0.7f}) {
    auto request = Request({{10, 20, 30}, {40}, {50, 60, 70, 80, 90, 100}}, 2, 77, 24);
    request.mutable_sampling()->set_temperature(temperature);
    v1::GenerateResponse generated;
    ASSERT_TRUE(Generate(request, &generated).ok());
    v1::LogProbsRequest scoring;
    scoring.set_temperature(temperature);
    for (const auto& result : generated.results()) {
      for (const auto& completion : result.completions()) {
        v1::PromptResponseIds* seq = scoring.add_sequences();
        *seq->mutable_prompt_token_ids() = result.prompt_token_ids();
        *seq->mutable_response_token_ids() = completion.token_ids();
      }
    }
    v1::LogProbsResponse scored;
    ASSERT_TRUE(LogProbs(scoring, &scored).ok());
    EXPECT_EQ(scored.model_id().version(), 1);
    ASSERT_EQ(scored.results_size(), 6);
    std::vector<std::vector<float>> expected;
    for (const auto& r : scored.results()) {
      expected.emplace_back(r.logprobs().begin(), r.logprobs().end());
      double sum = 0;
      for (float lp : r.logprobs()) sum += lp;
      EXPECT_NEAR(r.sum_logprob(), sum, 1e-4);
    }
    EXPECT_LT(MaxAbsDiff(generated, expected), 1e-5f) << "temperature " << temperature;
  }
}

TEST_F(GenerationServicesTest, TextPromptsAreTokenizedAndDecoded) {
  v1::GenerateRequest request;
  request.add_prompts()->set_text("Hi");
  request.mutable_sampling()->set_seed(5);
  request.mutable_sampling()->set_max_new_tokens(8);
  request.mutable_sampling()->set_ignore_eos(true);
  v1::GenerateResponse response;
  ASSERT_TRUE(Generate(request, &response).ok());
  EXPECT_THAT(response.results(0).prompt_token_ids(), ::testing::ElementsAre('H', 'i'));
  const auto& completion = response.results(0).completions(0);
  EXPECT_EQ(completion.token_ids_size(), 8);
  EXPECT_EQ(completion.finish_reason(), v1::FINISH_REASON_LENGTH);
}

TEST_F(GenerationServicesTest, UpdateWeightsMidLoadBumpsVersionAndNoResponseMixesVersions) {
  std::atomic<bool> stop{false};
  std::vector<v1::GenerateResponse> responses;
  std::mutex mu;
  std::vector<std::thread> clients;
  for (int c = 0; c < 2; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; !stop.load() && i < 200; ++i) {
        v1::GenerateResponse response;
        const grpc::Status status = Generate(Request({{1 + c, 2, 3}, {4}}, 2, static_cast<uint64_t>(i), 12), &response);
        ASSERT_TRUE(status.ok()) << status.error_message();
        std::lock_guard<std::mutex> lock(mu);
        responses.push_back(std::move(response));
      }
    });
  }
  // Update once the clients have answers from the first version (bounded wait).
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (responses.size() >= 2) break;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  auto v2_bytes = util::ReadFile(dir_ + "/v2/model.safetensors");
  ASSERT_TRUE(v2_bytes.ok());
  v1::WeightsHeader header;
  header.mutable_model_id()->set_name("trainer-policy");
  header.mutable_model_id()->set_version(2);
  auto update = serving::PushWeights(*gen_, *v2_bytes, header, 4096, absl::Seconds(60));
  ASSERT_TRUE(update.ok()) << update.status();
  EXPECT_EQ(update->model_id().version(), 2);
  EXPECT_EQ(update->previous_model_id().version(), 1);
  EXPECT_EQ(update->source_model_id().name(), "trainer-policy");
  // Let the clients get some answers from the new version (bounded wait).
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!responses.empty() && responses.back().model_id().version() == 2) break;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  stop = true;
  for (auto& client : clients) client.join();

  // Every response came whole from one version: its log-probs are exactly those of the version it names.
  int seen[3] = {0, 0, 0};
  for (const auto& response : responses) {
    const int version = static_cast<int>(response.model_id().version());
    ASSERT_TRUE(version == 1 || version == 2);
    ++seen[version];
    EXPECT_LT(MaxAbsDiff(response, ReferenceLogProbs(response, version)), 1e-5f);
  }
  EXPECT_GT(seen[1], 0);
  EXPECT_GT(seen[2], 0);
  v1::GenerateResponse after;
  ASSERT_TRUE(Generate(Request({{7}}, 1, 1), &after).ok());
  EXPECT_EQ(after.model_id().version(), 2);

  auto metrics = testing::HttpGet(server_->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_THAT(*metrics, HasSubstr("rlhf_model_version{service=\"policy-generation\"} 2"));
  EXPECT_THAT(*metrics, HasSubstr("rlhf_generation_tokens_total"));
  EXPECT_THAT(*metrics, HasSubstr("rlhf_generation_batch_rows_count"));
}

TEST_F(GenerationServicesTest, BadWeightUpdatesAreRefusedAndTheOldWeightsKeepServing) {
  auto v2_bytes = util::ReadFile(dir_ + "/v2/model.safetensors");
  ASSERT_TRUE(v2_bytes.ok());
  // A corrupted byte in transit: the digest no longer matches.
  std::vector<v1::WeightsChunk> chunks;
  ASSERT_TRUE(serving::ChunkSafetensors(*v2_bytes, {}, 1 << 20, [&](v1::WeightsChunk c) {
                chunks.push_back(std::move(c));
                return absl::OkStatus();
              }).ok());
  chunks[1].mutable_data()->mutable_data()->at(100) ^= 0x01;
  {
    grpc::ClientContext context;
    v1::UpdateWeightsResponse response;
    auto writer = gen_->UpdateWeights(&context, &response);
    for (const auto& chunk : chunks) writer->Write(chunk);
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DATA_LOSS);
    EXPECT_THAT(status.error_message(), HasSubstr("sha256"));
  }
  // Another architecture.
  testing::TinyModelOptions wide;
  wide.n_embd = 48;
  ASSERT_TRUE(testing::WriteTinyModel(dir_ + "/wide", wide).ok());
  auto wide_bytes = util::ReadFile(dir_ + "/wide/model.safetensors");
  auto refused = serving::PushWeights(*gen_, *wide_bytes, {}, 1 << 20, absl::Seconds(30));
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("wte"));
  // A payload without one of the parameters (found by fuzzing UpdateWeights, which answered NOT_FOUND): the API's
  // INVALID_ARGUMENT naming the tensor.
  {
    auto v2 = model::SafetensorsFile::Parse(*v2_bytes, "v2");
    ASSERT_TRUE(v2.ok());
    std::map<std::string, at::Tensor> tensors;
    for (const std::string& name : (*v2)->Names()) {
      if (name.find("wte") == std::string::npos) tensors[name] = *(*v2)->Get(name);
    }
    auto partial = model::SerializeSafetensors(tensors);
    ASSERT_TRUE(partial.ok());
    auto missing = serving::PushWeights(*gen_, *partial, {}, 1 << 20, absl::Seconds(30));
    EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument) << missing.status();
    EXPECT_THAT(std::string(missing.status().message()), HasSubstr("wte"));
  }
  // A version that is not above the served one.
  v1::WeightsHeader stale;
  stale.set_target_version(1);
  auto aborted = serving::PushWeights(*gen_, *v2_bytes, stale, 1 << 20, absl::Seconds(30));
  EXPECT_EQ(aborted.status().code(), absl::StatusCode::kAborted);
  // A stream that does not start with a header.
  {
    grpc::ClientContext context;
    v1::UpdateWeightsResponse response;
    auto writer = gen_->UpdateWeights(&context, &response);
    writer->Write(chunks[1]);
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("chunks[0] must be the header"));
  }
  // A checkpoint outside the folders the server allows (--path_roots), by absolute path or by "..".
  for (const std::string& outside : {std::string("/"), dir_ + "/../", std::string("../../etc")}) {
    grpc::ClientContext context;
    v1::UpdateWeightsFromCheckpointRequest request;
    request.set_path(outside);
    v1::UpdateWeightsResponse response;
    const grpc::Status status = gen_->UpdateWeightsFromCheckpoint(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << outside;
    EXPECT_THAT(status.error_message(), HasSubstr("--path_roots")) << outside;
  }
  // A checkpoint path that does not exist.
  {
    grpc::ClientContext context;
    v1::UpdateWeightsFromCheckpointRequest request;
    request.set_path(dir_ + "/missing");
    v1::UpdateWeightsResponse response;
    EXPECT_EQ(gen_->UpdateWeightsFromCheckpoint(&context, request, &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  v1::GenerateResponse response;
  ASSERT_TRUE(Generate(Request({{7, 8}}, 1, 3), &response).ok());
  EXPECT_EQ(response.model_id().version(), 1);
  EXPECT_LT(MaxAbsDiff(response, ReferenceLogProbs(response, 1)), 1e-5f);

  // A good checkpoint by path then works, with the version asked for.
  grpc::ClientContext context;
  v1::UpdateWeightsFromCheckpointRequest request;
  request.set_path(dir_ + "/v2");
  request.set_target_version(7);
  v1::UpdateWeightsResponse update;
  ASSERT_TRUE(gen_->UpdateWeightsFromCheckpoint(&context, request, &update).ok());
  EXPECT_EQ(update.model_id().version(), 7);
}

TEST_F(GenerationServicesTest, BadRequestsGetInvalidArgumentNamingTheField) {
  struct Case {
    v1::GenerateRequest request;
    std::string message;
  };
  std::vector<Case> cases;
  cases.push_back({v1::GenerateRequest(), "prompts is empty"});
  cases.push_back({Request({{}}, 1, 1), "prompts[0] is empty"});
  cases.push_back({Request({{5, -1}}, 1, 1), "prompts[0].token_ids[1]=-1 is outside the vocabulary [0, 258)"});
  cases.push_back({Request({{5}, {5, 258}}, 1, 1), "prompts[1].token_ids[1]=258 is outside the vocabulary"});
  cases.push_back({Request({{5}}, 1, 1, 500), "sampling.max_new_tokens=500 is outside [1, 48]"});
  cases.push_back({Request({{5}}, 100, 1), "num_samples=100 is outside [1, 16]"});
  cases.push_back({Request({std::vector<int>(90, 5)}, 1, 1, 16), "exceeds the model's max_position_embeddings=96"});
  auto bad_temperature = Request({{5}}, 1, 1);
  bad_temperature.mutable_sampling()->set_temperature(-1);
  cases.push_back({bad_temperature, "sampling.temperature=-1 is outside [0, 100]"});
  // Found by fuzzing LogProbs: a tiny temperature overflowed the scaled logits to infinity (NaN log-probs).
  auto tiny_temperature = Request({{5}}, 1, 1);
  tiny_temperature.mutable_sampling()->set_temperature(3.6e-44f);
  cases.push_back({tiny_temperature, "sampling.temperature=3.6"});
  auto bad_top_p = Request({{5}}, 1, 1);
  bad_top_p.mutable_sampling()->set_top_p(1.5);
  cases.push_back({bad_top_p, "sampling.top_p=1.5 is outside (0, 1]"});
  auto too_new = Request({{5}}, 1, 1);
  too_new.set_min_model_version(5);
  for (const auto& c : cases) {
    v1::GenerateResponse response;
    const grpc::Status status = Generate(c.request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.message;
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  }
  v1::GenerateResponse response;
  const grpc::Status stale = Generate(too_new, &response);
  EXPECT_EQ(stale.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(stale.error_message(), HasSubstr("min_model_version=5"));

  v1::LogProbsRequest empty;
  v1::LogProbsResponse scored;
  grpc::Status status = LogProbs(empty, &scored);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("sequences is empty"));
  v1::LogProbsRequest oov;
  oov.add_sequences()->add_prompt_token_ids(3);
  oov.mutable_sequences(0)->add_response_token_ids(300);
  status = LogProbs(oov, &scored);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("sequences[0].response_token_ids[0]=300"));
  v1::LogProbsRequest cold;
  cold.add_sequences()->add_prompt_token_ids(3);
  cold.set_temperature(0);
  status = LogProbs(cold, &scored);
  EXPECT_THAT(status.error_message(), HasSubstr("temperature=0"));
  // Found by fuzzing: 3.6e-44 passed the check for > 0, and every log-prob came back NaN.
  v1::LogProbsRequest tiny = oov;
  tiny.mutable_sequences(0)->set_response_token_ids(0, 7);
  tiny.set_temperature(3.6e-44f);
  status = LogProbs(tiny, &scored);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("is outside [0.001, 100]"));
  tiny.set_temperature(0.001f);
  ASSERT_TRUE(LogProbs(tiny, &scored).ok());
  for (float lp : scored.results(0).logprobs()) EXPECT_TRUE(std::isfinite(lp) && lp <= 0) << lp;
}

TEST_F(GenerationServicesTest, ExpiredDeadlineReturnsDeadlineExceededAndFreesItsSlot) {
  // Keep the engine busy, then send requests whose deadline passes while they wait.
  auto busy = std::async(std::launch::async, [&] {
    v1::GenerateResponse response;
    return Generate(Request({{1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}}, 1, 1, 48), &response);
  });
  absl::SleepFor(absl::Milliseconds(20));
  std::vector<std::future<grpc::Status>> late;
  for (int i = 0; i < 6; ++i) {
    late.push_back(std::async(std::launch::async, [&, i] {
      v1::GenerateResponse response;
      auto request = Request({{9}}, 1, static_cast<uint64_t>(i), 48);
      request.mutable_sampling()->set_temperature(0.5);  // another batch group: waits behind the busy batch
      return Generate(request, &response, absl::Milliseconds(1));
    }));
  }
  for (auto& f : late) EXPECT_EQ(f.get().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(busy.get().ok());
  // The expired requests left the queue without costing compute; new requests are served.
  for (int i = 0; i < 50 && gen_engine_->queue_depth() > 0; ++i) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(gen_engine_->queue_depth(), 0u);
  v1::GenerateResponse response;
  EXPECT_TRUE(Generate(Request({{9}}, 1, 1), &response).ok());
}

// A request whose caller gives up mid-generation leaves the batch at the next decode step instead of running to
// max_new_tokens; the engine then serves the next request.
TEST_F(GenerationServicesTest, CancelledRequestStopsCostingComputeAtTheNextStep) {
  generation::GenerationRequest request;
  request.prompts = {{1}, {2}, {3}, {4}};
  request.num_samples = 2;  // 8 rows, one batch
  request.max_new_tokens = 40;
  request.ignore_eos = true;
  request.seed = 1;
  std::atomic<int> polls{0};
  // The caller "goes away" at the 12th time the engine asks: during the second decode step.
  request.cancelled = [&polls] { return ++polls >= 12; };
  std::promise<absl::StatusOr<generation::GenerationResult>> promise;
  gen_engine_->Submit(std::move(request),
                      [&](absl::StatusOr<generation::GenerationResult> r) { promise.set_value(std::move(r)); });
  const auto result = promise.get_future().get();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  // Asked once before the batch, once per row and step until all rows left, once after: far fewer than the
  // 1 + 8 * 40 + 1 polls of a request that ran to its end.
  EXPECT_GE(polls.load(), 12);
  EXPECT_LE(polls.load(), 12 + 8 + 1);
  v1::GenerateResponse response;
  EXPECT_TRUE(Generate(Request({{9}}, 1, 1), &response).ok());
}

TEST_F(GenerationServicesTest, FullQueueAnswersResourceExhausted) {
  std::vector<std::future<grpc::Status>> calls;
  for (int i = 0; i < 40; ++i) {
    calls.push_back(std::async(std::launch::async, [&, i] {
      v1::GenerateResponse response;
      auto request = Request({{1, 2}}, 1, static_cast<uint64_t>(i), 48);
      request.mutable_sampling()->set_top_k(i + 1);  // distinct groups: no two share a batch
      return Generate(request, &response);
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
  EXPECT_EQ(exhausted + ok, 40);
}

TEST_F(GenerationServicesTest, GetModelInfoDescribesTheServedModel) {
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(gen_->GetModelInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.model_id().name(), "policy");
  EXPECT_EQ(info.model_id().version(), 1);
  EXPECT_EQ(info.config().n_layer(), 2);
  EXPECT_EQ(info.config().vocab_size(), 258);
  EXPECT_GT(info.parameter_count(), 0);
  EXPECT_EQ(info.device(), "cpu");
  EXPECT_EQ(info.tokenizer().kind(), v1::TOKENIZER_KIND_BYTE);
  EXPECT_EQ(info.tokenizer().eos_token_id(), 256);
  EXPECT_EQ(info.role(), v1::MODEL_ROLE_POLICY);
}

}  // namespace
}  // namespace rlhf
