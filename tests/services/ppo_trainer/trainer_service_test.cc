// The trainer service over real gRPC on loopback, on tiny models with the byte tokenizer.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/model/safetensors.h"
#include "common/runtime/client.h"
#include "common/runtime/server.h"
#include "common/serving/weights_transfer.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rlhf/v1/trainer.grpc.pb.h"
#include "services/ppo_trainer/ppo_trainer_service_impl.h"
#include "services/ppo_trainer/trainer_engine.h"
#include "tests/testing/small_filesystem.h"
#include "tests/testing/test_util.h"
#include "tests/testing/tiny_model.h"

namespace rlhf {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace v1 = ::rlhf::v1;

constexpr int32_t kEos = 256;  // the byte tokenizer's

struct TrainerServer {
  std::unique_ptr<trainer::TrainerEngine> engine;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<trainer::TrainerMetrics> metrics;
  std::unique_ptr<trainer::PpoTrainerServiceImpl> service;
  std::unique_ptr<runtime::Server> server;
  std::unique_ptr<v1::PpoTrainerService::Stub> stub;

  // Requests may name paths under `path_roots` (default: the test's temp folder).
  static std::unique_ptr<TrainerServer> Start(const std::string& model_dir, const std::string& checkpoint_root,
                                              std::vector<std::string> path_roots = {::testing::TempDir()}) {
    auto s = std::make_unique<TrainerServer>();
    trainer::TrainerEngineOptions options;
    options.model_dir = model_dir;
    options.checkpoint_root = checkpoint_root;
    options.path_roots = std::move(path_roots);
    auto engine = trainer::TrainerEngine::Create(options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (!engine.ok()) return nullptr;
    s->engine = *std::move(engine);
    s->metrics = std::make_unique<trainer::TrainerMetrics>(*s->registry);
    s->service = std::make_unique<trainer::PpoTrainerServiceImpl>(s->engine.get(), s->metrics.get(),
                                                                  trainer::StageDefaults{});
    runtime::ServerOptions server_options;
    server_options.name = "trainer-test";
    server_options.listen_address = "127.0.0.1:0";
    server_options.metrics_address = "127.0.0.1:0";
    auto server = runtime::Server::Start(server_options, {{"rlhf.v1.PpoTrainerService", s->service.get()}},
                                         s->registry);
    EXPECT_TRUE(server.ok()) << server.status();
    s->server = *std::move(server);
    runtime::ClientOptions client;
    client.target = "127.0.0.1:" + std::to_string(s->server->port());
    s->stub = v1::PpoTrainerService::NewStub(*runtime::MakeChannel(client));
    return s;
  }
  void Stop() {
    service->Shutdown();
    server->Shutdown();
    service.reset();
  }
};

// Reads a training stream to its end.
struct StreamResult {
  std::vector<v1::TrainingEvent> events;
  grpc::Status status;
};

template <typename Request, typename Method>
StreamResult ReadAll(v1::PpoTrainerService::Stub& stub, const Request& request, Method method,
                     absl::Duration timeout = absl::Seconds(120)) {
  StreamResult out;
  auto context = runtime::ContextWithTimeout(timeout);
  auto reader = (stub.*method)(context.get(), request);
  v1::TrainingEvent event;
  while (reader->Read(&event)) out.events.push_back(event);
  out.status = reader->Finish();
  return out;
}

void WriteLines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path);
  for (const std::string& line : lines) out << line << "\n";
}

v1::Rollout MakeRollout(const std::string& prompt, const std::string& response, float score) {
  v1::Rollout r;
  for (unsigned char c : prompt) r.add_prompt_token_ids(c);
  for (unsigned char c : response) r.add_response_token_ids(c);
  r.add_response_token_ids(kEos);
  for (int i = 0; i < r.response_token_ids_size(); ++i) r.add_reference_logprobs(-5.0f);
  r.set_reward_score(score);
  r.set_ended_with_stop_token(true);
  return r;
}

v1::PpoStepRequest PpoRequest(int step) {
  v1::PpoStepRequest request;
  for (int i = 0; i < 16; ++i) {
    const std::string response = (i + step) % 2 == 0 ? "yes" : "no";
    *request.add_rollouts() = MakeRollout("q" + std::to_string(i) + ":", response, response == "yes" ? 1.0f : -1.0f);
  }
  v1::PpoHyperParams* h = request.mutable_hparams();
  h->mutable_kl()->set_kind(v1::KL_CONTROLLER_KIND_ADAPTIVE);
  h->mutable_kl()->set_beta(0.1);
  h->mutable_kl()->set_target_kl(1.0);
  h->mutable_kl()->set_horizon(100);
  h->set_ppo_epochs(2);
  h->set_minibatch_size(8);
  h->mutable_policy_optimizer()->set_learning_rate(1e-3);
  h->mutable_value_optimizer()->set_learning_rate(1e-3);
  h->set_policy_ema_decay(0.9);
  h->set_seed(7);
  return request;
}

class TrainerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("trainer");
    testing::TinyModelOptions options;
    options.n_positions = 64;
    ASSERT_TRUE(testing::WriteTinyModel(dir_ + "/init", options).ok());
    server_ = TrainerServer::Start(dir_ + "/init", dir_ + "/checkpoints");
    ASSERT_NE(server_, nullptr);
    // Demonstrations: "say <letter>:" -> the letter three times.
    std::vector<std::string> sft, comparisons;
    for (int i = 0; i < 26; ++i) {
      const std::string letter(1, static_cast<char>('a' + i));
      sft.push_back(R"({"prompt": "say )" + letter + R"(:", "response": ")" + letter + letter + letter + R"("})");
      // Reward preference: more letters is better (a hidden rule for the RM to find).
      comparisons.push_back(R"({"prompt": "say )" + letter + R"(:", "responses": [{"text": ")" + letter + letter +
                            letter + letter + R"(", "rank": 1}, {"text": ")" + letter + letter + R"(", "rank": 2}, )" +
                            R"({"text": ")" + letter + R"(", "rank": 3}]})");
    }
    WriteLines(dir_ + "/sft.jsonl", sft);
    WriteLines(dir_ + "/comparisons.jsonl", comparisons);
  }
  void TearDown() override {
    if (server_ && server_->service) server_->Stop();
  }

  std::string dir_;
  std::unique_ptr<TrainerServer> server_;
};

TEST_F(TrainerServiceTest, TrainSftStreamsProgressLowersValidationLossAndBumpsThePolicyVersion) {
  v1::TrainSftRequest request;
  request.set_data_path(dir_ + "/sft.jsonl");
  request.set_validation_path(dir_ + "/sft.jsonl");
  request.mutable_hparams()->set_epochs(3);
  request.mutable_hparams()->set_batch_size(8);
  request.mutable_hparams()->set_dropout(0.0f);
  request.mutable_hparams()->mutable_optimizer()->set_learning_rate(3e-3);
  request.mutable_selection()->set_criterion(v1::CHECKPOINT_CRITERION_VALIDATION_LOSS);
  StreamResult result = ReadAll(*server_->stub, request, &v1::PpoTrainerService::Stub::TrainSft);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_FALSE(result.events.empty());
  const v1::TrainingEvent& last = result.events.back();
  EXPECT_TRUE(last.done());
  EXPECT_EQ(last.summary().model_id().version(), 2) << "version 1 was the initial policy";
  EXPECT_EQ(last.summary().train_examples(), 26);
  std::vector<double> val;
  for (const auto& e : result.events) {
    if (e.stage() != v1::STAGE_SFT) ADD_FAILURE() << "stage " << e.stage();
    if (e.metrics().count("val/loss") && !e.done()) val.push_back(e.metrics().at("val/loss"));
  }
  ASSERT_EQ(val.size(), 3u);
  EXPECT_LT(val.back(), val.front());
  EXPECT_EQ(last.summary().selected_epoch(), 3);
  EXPECT_TRUE(util::ReadFile(last.summary().checkpoint_path() + "/model.safetensors").ok());
  EXPECT_TRUE(util::ReadFile(last.summary().checkpoint_path() + "/tokenizer.json").ok())
      << "checkpoints carry the tokenizer";
  v1::ModelInfo info;
  auto context = runtime::ContextWithTimeout(absl::Seconds(10));
  ASSERT_TRUE(server_->stub->GetModelInfo(context.get(), v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.model_id().version(), 2);
  EXPECT_EQ(info.tokenizer().kind(), v1::TOKENIZER_KIND_BYTE);
}

// Every path a request names must resolve inside --path_roots: SaveCheckpoint{path: "../../x"} once wrote to /x,
// and a data file anywhere on the machine could be read (and quoted in errors).
TEST_F(TrainerServiceTest, PathsOutsideThePathRootsAreRefused) {
  const std::string allowed = dir_ + "/allowed";
  ASSERT_TRUE(util::MakeDirectories(allowed).ok());
  WriteLines(dir_ + "/outside.jsonl", {R"({"prompt": "a", "response": "b"})"});
  ASSERT_EQ(::symlink((dir_ + "/outside.jsonl").c_str(), (allowed + "/link.jsonl").c_str()), 0);
  server_ = TrainerServer::Start(dir_ + "/init", allowed + "/checkpoints", {allowed});
  ASSERT_NE(server_, nullptr);
  for (const std::string& path : {std::string("/etc/passwd"), dir_ + "/outside.jsonl", std::string("../outside.jsonl"),
                                  allowed + "/link.jsonl"}) {
    v1::TrainSftRequest sft;
    sft.set_data_path(path);
    StreamResult refused = ReadAll(*server_->stub, sft, &v1::PpoTrainerService::Stub::TrainSft);
    EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << path;
    EXPECT_THAT(refused.status.error_message(), HasSubstr("data_path")) << path;
    EXPECT_THAT(refused.status.error_message(), Not(HasSubstr("root:"))) << path;
  }
  for (const std::string& path : {std::string("../../x"), dir_ + "/escaped"}) {
    v1::SaveCheckpointRequest save;
    save.set_path(path);
    v1::SaveCheckpointResponse saved;
    auto context = runtime::ContextWithTimeout(absl::Seconds(30));
    EXPECT_EQ(server_->stub->SaveCheckpoint(context.get(), save, &saved).error_code(),
              grpc::StatusCode::PERMISSION_DENIED)
        << path;
  }
  EXPECT_FALSE(util::PathExists(dir_ + "/escaped"));
  v1::LoadCheckpointRequest load;
  load.set_path(dir_ + "/init");
  v1::LoadCheckpointResponse loaded;
  auto context = runtime::ContextWithTimeout(absl::Seconds(30));
  EXPECT_EQ(server_->stub->LoadCheckpoint(context.get(), load, &loaded).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // Inside the roots a relative path is taken from the first root.
  v1::SaveCheckpointRequest save;
  save.set_path("ckpt-1");
  v1::SaveCheckpointResponse saved;
  context = runtime::ContextWithTimeout(absl::Seconds(60));
  ASSERT_TRUE(server_->stub->SaveCheckpoint(context.get(), save, &saved).ok());
  EXPECT_TRUE(util::IsDirectory(allowed + "/ckpt-1"));
}

TEST_F(TrainerServiceTest, RejectsBadRequestsNamingTheField) {
  v1::TrainSftRequest sft;
  EXPECT_EQ(ReadAll(*server_->stub, sft, &v1::PpoTrainerService::Stub::TrainSft).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  sft.set_data_path(dir_ + "/missing.jsonl");
  StreamResult missing = ReadAll(*server_->stub, sft, &v1::PpoTrainerService::Stub::TrainSft);
  EXPECT_EQ(missing.status.error_code(), grpc::StatusCode::NOT_FOUND) << missing.status.error_message();
  WriteLines(dir_ + "/bad.jsonl", {R"({"prompt": "a", "response": "b"})", R"({"prompt": "a"})"});
  sft.set_data_path(dir_ + "/bad.jsonl");
  StreamResult bad = ReadAll(*server_->stub, sft, &v1::PpoTrainerService::Stub::TrainSft);
  EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.status.error_message(), HasSubstr("bad.jsonl:2"));
  sft.mutable_hparams()->mutable_optimizer()->set_learning_rate(-1);
  EXPECT_THAT(ReadAll(*server_->stub, sft, &v1::PpoTrainerService::Stub::TrainSft).status.error_message(),
              HasSubstr("hparams.optimizer.learning_rate"));

  v1::PpoStepRequest ppo = PpoRequest(0);
  ppo.mutable_rollouts(3)->clear_reference_logprobs();
  ppo.mutable_rollouts(3)->add_reference_logprobs(-1);
  v1::PpoStepResponse response;
  auto context = runtime::ContextWithTimeout(absl::Seconds(30));
  grpc::Status status = server_->stub->PpoStep(context.get(), ppo, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << "no value model yet";
  EXPECT_THAT(status.error_message(), HasSubstr("value model"));
  ppo.mutable_hparams()->set_clip_range(-1);
  context = runtime::ContextWithTimeout(absl::Seconds(30));
  status = server_->stub->PpoStep(context.get(), ppo, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("hparams.clip_range"));
}

TEST_F(TrainerServiceTest, RewardModelThenPpoStepsExportAndResumeExactlyFromACheckpoint) {
  v1::TrainRewardModelRequest rm;
  rm.set_comparisons_path(dir_ + "/comparisons.jsonl");
  rm.mutable_hparams()->set_epochs(8);
  rm.mutable_hparams()->set_prompts_per_batch(8);
  rm.mutable_hparams()->mutable_optimizer()->set_learning_rate(3e-3);
  rm.set_normalization_demonstrations_path(dir_ + "/sft.jsonl");
  rm.set_output_dir(dir_ + "/reward");
  rm.set_init_value_model(true);
  StreamResult trained = ReadAll(*server_->stub, rm, &v1::PpoTrainerService::Stub::TrainRewardModel);
  ASSERT_TRUE(trained.status.ok()) << trained.status.error_message();
  const v1::TrainingSummary& summary = trained.events.back().summary();
  EXPECT_EQ(summary.model_id().name(), "reward");
  EXPECT_EQ(summary.checkpoint_path(), dir_ + "/reward/rm-1");
  EXPECT_GT(summary.metrics().at("train/accuracy"), 0.9);
  EXPECT_NE(summary.normalization_bias(), 0.0f);
  auto rm_file = model::SafetensorsFile::Open(summary.checkpoint_path() + "/model.safetensors");
  ASSERT_TRUE(rm_file.ok());
  EXPECT_TRUE((*rm_file)->Contains("score.weight"));

  // PPO step 1, checkpoint, step 2: the uninterrupted run.
  v1::PpoStepResponse first, second;
  auto context = runtime::ContextWithTimeout(absl::Seconds(60));
  v1::PpoStepRequest request1 = PpoRequest(1);
  request1.set_expected_policy_version(1);
  ASSERT_TRUE(server_->stub->PpoStep(context.get(), request1, &first).ok());
  EXPECT_EQ(first.policy_model_id().version(), 2);
  EXPECT_EQ(first.stats().step(), 1);
  EXPECT_EQ(first.stats().num_rollouts(), 16);
  EXPECT_GT(first.stats().entropy(), 0.0);
  EXPECT_EQ(first.stats().kl_estimator(), "k1");
  context = runtime::ContextWithTimeout(absl::Seconds(60));
  grpc::Status stale = server_->stub->PpoStep(context.get(), request1, &second);
  EXPECT_EQ(stale.error_code(), grpc::StatusCode::ABORTED) << "version 1 is gone";

  v1::SaveCheckpointRequest save;
  save.set_path(dir_ + "/ckpt");
  (*save.mutable_metadata()->mutable_fields())["run_id"].set_string_value("test");
  v1::SaveCheckpointResponse saved;
  context = runtime::ContextWithTimeout(absl::Seconds(60));
  ASSERT_TRUE(server_->stub->SaveCheckpoint(context.get(), save, &saved).ok());
  EXPECT_EQ(saved.step(), 1);
  EXPECT_GT(saved.total_bytes(), 0);
  context = runtime::ContextWithTimeout(absl::Seconds(60));
  EXPECT_EQ(server_->stub->SaveCheckpoint(context.get(), save, &saved).error_code(), grpc::StatusCode::ALREADY_EXISTS);

  // Export: the stream reassembles into the policy saved in the checkpoint.
  v1::ExportWeightsRequest export_request;
  export_request.set_chunk_size_bytes(4096);
  export_request.set_target_version(7);
  context = runtime::ContextWithTimeout(absl::Seconds(60));
  auto reader = server_->stub->ExportWeights(context.get(), export_request);
  serving::WeightsAssembler assembler(int64_t{1} << 30);
  v1::WeightsChunk chunk;
  int chunks = 0;
  while (reader->Read(&chunk)) {
    ASSERT_TRUE(assembler.Add(chunk).ok());
    ++chunks;
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_GT(chunks, 10);
  EXPECT_EQ(assembler.header().target_version(), 7);
  EXPECT_EQ(assembler.header().model_id().version(), 2);
  auto payload = assembler.Finish();
  ASSERT_TRUE(payload.ok()) << payload.status();
  auto exported = model::SafetensorsFile::Parse(*payload, "export");
  auto checkpointed = model::SafetensorsFile::Open(dir_ + "/ckpt/policy/model.safetensors");
  ASSERT_TRUE(exported.ok() && checkpointed.ok());
  for (const std::string& name : (*checkpointed)->Names()) {
    EXPECT_TRUE((*exported)->Get(name)->equal(*(*checkpointed)->Get(name))) << name;
  }

  v1::PpoStepRequest request2 = PpoRequest(2);
  context = runtime::ContextWithTimeout(absl::Seconds(60));
  ASSERT_TRUE(server_->stub->PpoStep(context.get(), request2, &second).ok());
  EXPECT_EQ(second.stats().step(), 2);

  // Stop this trainer; a new one resumes from the checkpoint and takes the same step 2.
  server_->Stop();
  server_ = TrainerServer::Start("", dir_ + "/checkpoints2");
  ASSERT_NE(server_, nullptr);
  v1::LoadCheckpointRequest load;
  load.set_path(dir_ + "/ckpt");
  v1::LoadCheckpointResponse loaded;
  context = runtime::ContextWithTimeout(absl::Seconds(60));
  ASSERT_TRUE(server_->stub->LoadCheckpoint(context.get(), load, &loaded).ok());
  EXPECT_EQ(loaded.step(), 1);
  EXPECT_EQ(loaded.model_id().version(), 2);
  v1::PpoStepResponse resumed;
  context = runtime::ContextWithTimeout(absl::Seconds(60));
  ASSERT_TRUE(server_->stub->PpoStep(context.get(), request2, &resumed).ok());
  EXPECT_EQ(resumed.stats().step(), 2);
  EXPECT_DOUBLE_EQ(resumed.stats().policy_loss(), second.stats().policy_loss());
  EXPECT_DOUBLE_EQ(resumed.stats().value_loss(), second.stats().value_loss());
  EXPECT_DOUBLE_EQ(resumed.stats().mean_kl(), second.stats().mean_kl());
  EXPECT_DOUBLE_EQ(resumed.stats().kl_beta(), second.stats().kl_beta());
  EXPECT_DOUBLE_EQ(resumed.stats().next_kl_beta(), second.stats().next_kl_beta());
  EXPECT_DOUBLE_EQ(resumed.stats().approx_kl(), second.stats().approx_kl());
  EXPECT_EQ(resumed.policy_model_id().version(), second.policy_model_id().version());

  // The EMA export needs the EMA, which the checkpoint restored.
  export_request.set_ema_weights(true);
  context = runtime::ContextWithTimeout(absl::Seconds(60));
  reader = server_->stub->ExportWeights(context.get(), export_request);
  while (reader->Read(&chunk)) {
  }
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(TrainerServiceTest, TheValueModelCanStartFromThePolicy) {
  v1::LoadCheckpointRequest load;
  load.set_path(dir_ + "/init");
  load.set_role(v1::MODEL_ROLE_VALUE);
  v1::LoadCheckpointResponse loaded;
  auto context = runtime::ContextWithTimeout(absl::Seconds(30));
  ASSERT_TRUE(server_->stub->LoadCheckpoint(context.get(), load, &loaded).ok());
  EXPECT_EQ(loaded.value_model_id().version(), 1);
  v1::PpoStepResponse response;
  context = runtime::ContextWithTimeout(absl::Seconds(60));
  grpc::Status status = server_->stub->PpoStep(context.get(), PpoRequest(0), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.stats().step(), 1);
  EXPECT_NEAR(response.stats().explained_variance(), 0.0, 1e-6) << "a zero value head predicts nothing at first";
}

TEST_F(TrainerServiceTest, AFullDiskFailsSaveCheckpointWithResourceExhaustedAndLeavesNoPartialCheckpoint) {
  RLHF_MOUNT_SMALL_FILESYSTEM_OR_SKIP(fs, 4 << 20);
  v1::LoadCheckpointRequest value;
  value.set_path(dir_ + "/init");
  value.set_role(v1::MODEL_ROLE_VALUE);
  v1::LoadCheckpointResponse loaded;
  auto context = runtime::ContextWithTimeout(absl::Seconds(30));
  ASSERT_TRUE(server_->stub->LoadCheckpoint(context.get(), value, &loaded).ok());
  v1::PpoStepResponse step;
  context = runtime::ContextWithTimeout(absl::Seconds(60));
  ASSERT_TRUE(server_->stub->PpoStep(context.get(), PpoRequest(1), &step).ok());  // optimiser state to save too

  auto save = [&](const std::string& name) {
    v1::SaveCheckpointRequest request;
    request.set_path(fs->path() + "/" + name);
    v1::SaveCheckpointResponse saved;
    auto save_context = runtime::ContextWithTimeout(absl::Seconds(60));
    return server_->stub->SaveCheckpoint(save_context.get(), request, &saved);
  };
  auto listing = [&] {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(fs->path())) {
      names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  };
  ASSERT_TRUE(save("iter-1").ok());
  ASSERT_TRUE(fs->Fill().ok());
  const grpc::Status full = save("iter-2");
  EXPECT_EQ(full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << full.error_message();
  EXPECT_THAT(full.error_message(), HasSubstr("No space left on device"));
  // Neither a half-written iter-2 (which a resume would load) nor its temporary folder is left.
  EXPECT_THAT(listing(), ::testing::ElementsAre(".filler", "iter-1"));
  v1::LoadCheckpointRequest load;
  load.set_path(fs->path() + "/iter-2");
  context = runtime::ContextWithTimeout(absl::Seconds(30));
  EXPECT_EQ(server_->stub->LoadCheckpoint(context.get(), load, &loaded).error_code(), grpc::StatusCode::NOT_FOUND);

  // Space comes back: the same save works, and the trainer resumes from it.
  ASSERT_TRUE(fs->Free().ok());
  const grpc::Status saved = save("iter-2");
  ASSERT_TRUE(saved.ok()) << saved.error_message();
  context = runtime::ContextWithTimeout(absl::Seconds(30));
  ASSERT_TRUE(server_->stub->LoadCheckpoint(context.get(), load, &loaded).ok());
  EXPECT_EQ(loaded.step(), 1);
  EXPECT_THAT(listing(), ::testing::ElementsAre("iter-1", "iter-2"));
}

TEST_F(TrainerServiceTest, OneOperationAtATimeAndCancellingFreesTheTrainer) {
  std::vector<std::string> many;
  for (int i = 0; i < 400; ++i) many.push_back(R"({"prompt": "p)" + std::to_string(i) + R"(:", "response": "r"})");
  WriteLines(dir_ + "/many.jsonl", many);
  v1::TrainSftRequest request;
  request.set_data_path(dir_ + "/many.jsonl");
  request.mutable_hparams()->set_epochs(100);
  request.mutable_hparams()->set_batch_size(4);
  grpc::ClientContext context;
  auto reader = server_->stub->TrainSft(&context, request);
  v1::TrainingEvent event;
  ASSERT_TRUE(reader->Read(&event)) << "training started";
  v1::PpoStepResponse response;
  auto other = runtime::ContextWithTimeout(absl::Seconds(10));
  grpc::Status busy = server_->stub->PpoStep(other.get(), PpoRequest(0), &response);
  EXPECT_EQ(busy.error_code(), grpc::StatusCode::UNAVAILABLE) << "busy: retry later";
  EXPECT_THAT(busy.error_message(), HasSubstr("TrainSft is running"));
  context.TryCancel();
  while (reader->Read(&event)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The trainer is free again once the loop noticed.
  grpc::StatusCode code = grpc::StatusCode::UNAVAILABLE;
  for (int i = 0; i < 100 && code == grpc::StatusCode::UNAVAILABLE; ++i) {
    v1::SaveCheckpointRequest save;
    save.set_path(dir_ + "/after-cancel-" + std::to_string(i));
    v1::SaveCheckpointResponse saved;
    auto ctx = runtime::ContextWithTimeout(absl::Seconds(10));
    code = server_->stub->SaveCheckpoint(ctx.get(), save, &saved).error_code();
    if (code == grpc::StatusCode::UNAVAILABLE) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(code, grpc::StatusCode::OK);
}

}  // namespace
}  // namespace rlhf
