// The loop through the real service binaries on loopback, on the built-in task, shortened to CI size.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/runtime/client.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "rlhf/v1/labeling.grpc.pb.h"
#include "rlhf/v1/orchestrator.grpc.pb.h"
#include "services/orchestrator/run_config.h"
#include "services/orchestrator/run_setup.h"
#include "tests/testing/labeling_bot.h"
#include "tests/testing/test_util.h"
#include "tools/cli/local_services.h"

namespace rlhf {
namespace {

namespace v1 = ::rlhf::v1;
using Json = nlohmann::json;

v1::RunConfig ShortConfig(int32_t ppo_iterations) {
  v1::RunConfig c;
  c.mutable_task()->set_builtin_task("instructions");
  c.mutable_sft()->mutable_hparams()->set_epochs(1);
  c.mutable_sft()->mutable_hparams()->set_max_steps(30);
  c.mutable_comparisons()->set_num_prompts(64);
  c.mutable_reward_model()->mutable_hparams()->set_epochs(1);
  c.mutable_ppo()->set_iterations(ppo_iterations);
  c.mutable_ppo()->set_prompts_per_iteration(16);
  c.mutable_evaluation()->set_num_prompts(32);
  return orchestrator::WithDefaults(c);
}

class LoopTest : public ::testing::Test {
 protected:
  // With `replicas` > 1, that many generation and reward servers, reached through one multi-address target each
  // (as a dns:/// name of a headless Service resolves to every pod).
  void Start(const v1::RunConfig& config, const std::string& run_id, int replicas = 1) {
    root_ = testing::MakeTempDir("loop");
    run_dir_ = root_ + "/runs/" + run_id;
    auto files = orchestrator::PrepareRun(config, run_dir_);
    ASSERT_TRUE(files.ok()) << files.status();
    cli::SuiteLayout layout;
    layout.policy_model = files->init_model;
    layout.reward_model = files->init_reward_model;
    layout.checkpoint_root = root_ + "/trainer";
    layout.runs_root = root_ + "/runs";
    layout.labeling_state_dir = root_ + "/labeling";
    services_ = cli::SuiteServices(RLHF_BINARY_DIR, layout);
    services_.back().args.push_back("--checkpoint_every=2");
    for (int r = 2; r <= replicas; ++r) {
      for (const char* name : {"policy-generation", "reward-scoring"}) {
        auto original = std::find_if(services_.begin(), services_.end(),
                                     [&](const cli::LocalService& s) { return s.name == name; });
        cli::LocalService copy = *original;
        copy.name = absl::StrCat(name, "-", r);
        services_.insert(services_.end() - 1, copy);  // the orchestrator stays last
      }
    }
    ASSERT_TRUE(util::MakeDirectories(root_ + "/logs").ok());
    const absl::Status started = cli::StartLocalServices(services_, root_ + "/logs", absl::Seconds(60));
    ASSERT_TRUE(started.ok()) << started;
    config_ = config;
    std::map<std::string, int> port;
    for (const auto& s : services_) port[s.name] = s.port;
    auto* a = config_.mutable_services();
    a->set_generation(Targets("policy-generation", replicas));
    a->set_reward(Targets("reward-scoring", replicas));
    a->set_reference(absl::StrCat("127.0.0.1:", port["reference-logprob"]));
    a->set_trainer(absl::StrCat("127.0.0.1:", port["ppo-trainer"]));
    a->set_labeling(absl::StrCat("127.0.0.1:", port["labeling"]));
    Connect();
    v1::StartRunRequest request;
    *request.mutable_config() = config_;
    request.set_run_id(run_id);
    v1::Run run;
    auto context = runtime::ContextWithTimeout(absl::Seconds(30));
    grpc::Status status = orchestrator_->StartRun(context.get(), request, &run);
    ASSERT_TRUE(status.ok()) << status.error_message();
    run_id_ = run.run_id();
    EXPECT_EQ(run.run_dir(), run_dir_);
  }
  // "127.0.0.1:P" for one replica of `name`, "ipv4:127.0.0.1:P1,127.0.0.1:P2,..." for several.
  std::string Targets(const std::string& name, int replicas) const {
    std::vector<std::string> addresses;
    for (const auto& s : services_) {
      if (s.name == name || absl::StartsWith(s.name, name + "-")) addresses.push_back(absl::StrCat("127.0.0.1:", s.port));
    }
    EXPECT_EQ(static_cast<int>(addresses.size()), replicas) << name;
    return replicas == 1 ? addresses[0] : absl::StrCat("ipv4:", absl::StrJoin(addresses, ","));
  }
  // Sum of the samples of `metric` whose labels contain `label` (e.g. outcome="ok"), from a service's /metrics.
  double MetricSum(const cli::LocalService& service, const std::string& metric, const std::string& label) {
    auto text = testing::HttpGet(service.metrics_port, "/metrics");
    EXPECT_TRUE(text.ok()) << service.name << ": " << text.status();
    double sum = 0;
    if (!text.ok()) return sum;
    for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
      if (!absl::StartsWith(line, metric + "{") || !absl::StrContains(line, label)) continue;
      double value = 0;
      if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) sum += value;
    }
    return sum;
  }
  void Connect() {
    runtime::ClientOptions client;
    client.target = absl::StrCat("127.0.0.1:", services_.back().port);
    client.max_reconnect_backoff = absl::Milliseconds(200);
    orchestrator_ = v1::OrchestratorService::NewStub(*runtime::MakeChannel(client));
  }
  void TearDown() override {
    if (!services_.empty()) cli::StopLocalServices(services_, absl::Seconds(40)).IgnoreError();
  }
  v1::Run WaitForEnd(absl::Duration timeout) {
    v1::Run run;
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      v1::GetRunRequest request;
      request.set_run_id(run_id_);
      auto context = runtime::ContextWithTimeout(absl::Seconds(10));
      if (orchestrator_->GetRun(context.get(), request, &run).ok() &&
          (run.state() == v1::RUN_STATE_SUCCEEDED || run.state() == v1::RUN_STATE_FAILED ||
           run.state() == v1::RUN_STATE_CANCELLED)) {
        return run;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    ADD_FAILURE() << "the run did not end within " << absl::FormatDuration(timeout);
    return run;
  }
  // metrics.jsonl as (stage, round, step) -> count.
  std::map<std::tuple<std::string, int, int64_t>, int> MetricLines() {
    std::map<std::tuple<std::string, int, int64_t>, int> out;
    auto text = util::ReadFile(run_dir_ + "/metrics.jsonl");
    EXPECT_TRUE(text.ok()) << text.status();
    if (!text.ok()) return out;
    for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
      Json j = Json::parse(line, nullptr, false);
      EXPECT_FALSE(j.is_discarded()) << line;
      if (j.is_discarded()) continue;
      ++out[{j.value("stage", std::string()), j.value("round", 0), j.value("step", int64_t{0})}];
    }
    return out;
  }

  std::string root_, run_dir_, run_id_;
  v1::RunConfig config_;
  std::vector<cli::LocalService> services_;
  std::unique_ptr<v1::OrchestratorService::Stub> orchestrator_;
};

TEST_F(LoopTest, AShortenedLoopRunsEndToEndThroughTheServices) {
  ASSERT_NO_FATAL_FAILURE(Start(ShortConfig(4), "short"));
  // WatchRun streams every stage to the end of the run.
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  v1::WatchRunRequest watch;
  watch.set_run_id(run_id_);
  watch.set_include_history(true);
  auto reader = orchestrator_->WatchRun(&context, watch);
  std::set<v1::Stage> stages;
  v1::RunEvent event, last;
  while (reader->Read(&event)) {
    stages.insert(event.stage());
    last = event;
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(last.state_change().current(), v1::RUN_STATE_SUCCEEDED) << last.message();
  for (v1::Stage s : {v1::STAGE_SFT, v1::STAGE_COMPARISONS, v1::STAGE_REWARD_MODEL, v1::STAGE_PPO,
                      v1::STAGE_EVALUATION}) {
    EXPECT_TRUE(stages.count(s)) << v1::Stage_Name(s);
  }
  v1::Run run = WaitForEnd(absl::Seconds(30));
  ASSERT_EQ(run.state(), v1::RUN_STATE_SUCCEEDED) << run.error_message();
  EXPECT_EQ(run.evaluation().num_prompts(), 32);
  EXPECT_GE(run.evaluation().win_rate(), 0.0);
  EXPECT_LE(run.evaluation().win_rate_ci_low(), run.evaluation().win_rate());
  EXPECT_GE(run.checkpoints_size(), 3) << "SFT, reward model, PPO";
  auto lines = MetricLines();
  for (int64_t step = 1; step <= 4; ++step) EXPECT_EQ((lines[{"ppo", 1, step}]), 1) << "ppo step " << step;
  EXPECT_TRUE(util::ReadFile(run_dir_ + "/eval/summary.json").ok());
  auto report = util::ReadFile(run_dir_ + "/report.html");
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_THAT(*report, ::testing::HasSubstr("<svg"));
  EXPECT_TRUE(util::ReadFile(run_dir_ + "/comparisons/round-1.jsonl").ok());
  // The orchestrator's /metrics counts the run as succeeded and has no progress series left for it.
  auto orchestrator = std::find_if(services_.begin(), services_.end(),
                                   [](const cli::LocalService& s) { return s.name == "orchestrator"; });
  ASSERT_NE(orchestrator, services_.end());
  auto metrics = testing::HttpGet(orchestrator->metrics_port, "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_THAT(*metrics, ::testing::HasSubstr("rlhf_orchestrator_runs{state=\"succeeded\"} 1"));
  EXPECT_THAT(*metrics, ::testing::HasSubstr("rlhf_orchestrator_runs{state=\"running\"} 0"));
  EXPECT_THAT(*metrics, ::testing::Not(::testing::HasSubstr("rlhf_orchestrator_stage_progress_ratio{")));
}

TEST_F(LoopTest, AKilledOrchestratorResumesAndFinishesWithCompletedStepsIntact) {
  ASSERT_NO_FATAL_FAILURE(Start(ShortConfig(12), "killed"));
  // Wait until PPO has checkpointed a few iterations, then SIGKILL the orchestrator.
  const absl::Time deadline = absl::Now() + absl::Minutes(5);
  int64_t checkpointed = 0;
  while (absl::Now() < deadline && checkpointed < 4) {
    auto text = util::ReadFile(run_dir_ + "/progress.json");
    if (text.ok()) {
      Json j = Json::parse(*text, nullptr, false);
      if (!j.is_discarded() && j.contains("rounds") && !j["rounds"].empty()) {
        checkpointed = j["rounds"][0].value("ppo_iteration", int64_t{0});
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GE(checkpointed, 4) << "PPO did not reach iteration 4";
  cli::LocalService& orchestrator = services_.back();
  ASSERT_EQ(orchestrator.name, "orchestrator");
  ASSERT_EQ(::kill(orchestrator.pid, SIGKILL), 0);
  int status = 0;
  ::waitpid(orchestrator.pid, &status, 0);
  orchestrator.pid = -1;
  auto before = MetricLines();
  // A new orchestrator on the same runs root resumes the run by itself.
  std::vector<cli::LocalService> restarted = {orchestrator};
  ASSERT_TRUE(util::MakeDirectories(root_ + "/logs-restart").ok());
  const absl::Status restarted_ok = cli::StartLocalServices(restarted, root_ + "/logs-restart", absl::Seconds(60));
  ASSERT_TRUE(restarted_ok.ok()) << restarted_ok;
  services_.back() = restarted[0];
  Connect();
  v1::Run run = WaitForEnd(absl::Minutes(5));
  ASSERT_EQ(run.state(), v1::RUN_STATE_SUCCEEDED) << run.error_message();
  auto after = MetricLines();
  for (int64_t step = 1; step <= 12; ++step) {
    EXPECT_EQ((after[{"ppo", 1, step}]), 1) << "ppo step " << step << " must appear exactly once";
  }
  // The steps completed before the kill and checkpointed are the same lines, untouched.
  for (int64_t step = 1; step <= checkpointed; ++step) EXPECT_EQ((before[{"ppo", 1, step}]), 1) << step;
  EXPECT_EQ((after[{"sft", 0, 1}]), 1) << "SFT ran once";
  EXPECT_TRUE(util::ReadFile(run_dir_ + "/eval/summary.json").ok());
}

TEST_F(LoopTest, EveryGenerationAndRewardReplicaGetsEveryWeightUpdateAndServesCalls) {
  ASSERT_NO_FATAL_FAILURE(Start(ShortConfig(4), "replicas", /*replicas=*/2));
  v1::Run run = WaitForEnd(absl::Minutes(5));
  ASSERT_EQ(run.state(), v1::RUN_STATE_SUCCEEDED) << run.error_message();
  std::map<std::string, const cli::LocalService*> by_name;
  for (const auto& s : services_) by_name[s.name] = &s;
  for (const std::string kind : {"policy-generation", "reward-scoring"}) {
    const cli::LocalService& one = *by_name[kind];
    const cli::LocalService& two = *by_name[kind + "-2"];
    const double updates = MetricSum(one, "rlhf_weight_updates_total", "outcome=\"ok\"");
    // Generation: the SFT checkpoint, then a push per PPO iteration, then SFT again and PPO for the evaluation.
    EXPECT_GE(updates, kind == "policy-generation" ? 5 : 1) << kind;
    EXPECT_EQ(MetricSum(two, "rlhf_weight_updates_total", "outcome=\"ok\""), updates)
        << kind << ": both replicas get every update";
    const std::string method = kind == "policy-generation" ? "/rlhf.v1.PolicyGenerationService/Generate"
                                                           : "/rlhf.v1.RewardScoringService/Score";
    for (const cli::LocalService* replica : {&one, &two}) {
      EXPECT_GT(MetricSum(*replica, "rlhf_rpc_requests_total", "method=\"" + method + "\""), 0)
          << replica->name << " served no " << method << ": calls are not spread over the replicas";
    }
  }
}

TEST_F(LoopTest, PeopleAtTheLabelingQueueRankTheComparisonsEvenAcrossALabelingServiceCrash) {
  v1::RunConfig config = ShortConfig(2);
  config.mutable_comparisons()->set_num_prompts(40);
  config.mutable_labeler()->mutable_human_queue()->mutable_task_timeout()->set_seconds(5);  // a task in flight at the crash comes back soon
  ASSERT_NO_FATAL_FAILURE(Start(config, "human"));
  cli::LocalService* labeling = nullptr;
  for (auto& s : services_) {
    if (s.name == "labeling") labeling = &s;
  }
  ASSERT_NE(labeling, nullptr);
  int before_crash = 0;
  {
    testing::LabelingBot bot(absl::StrCat("127.0.0.1:", labeling->port), "bot");
    const absl::Time deadline = absl::Now() + absl::Minutes(4);
    while (bot.answered() < 15 && absl::Now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    before_crash = bot.answered();
    ASSERT_GE(before_crash, 15) << "the bot got no tasks";
    ASSERT_EQ(::kill(labeling->pid, SIGKILL), 0);
    int status = 0;
    ::waitpid(labeling->pid, &status, 0);
    labeling->pid = -1;
  }
  std::vector<cli::LocalService> restarted = {*labeling};
  ASSERT_TRUE(util::MakeDirectories(root_ + "/logs-restart").ok());
  const absl::Status restarted_ok = cli::StartLocalServices(restarted, root_ + "/logs-restart", absl::Seconds(60));
  ASSERT_TRUE(restarted_ok.ok()) << restarted_ok;
  *labeling = restarted[0];
  int after_crash = 0;
  v1::Run run;
  {
    testing::LabelingBot bot(absl::StrCat("127.0.0.1:", labeling->port), "bot");
    run = WaitForEnd(absl::Minutes(5));
    after_crash = bot.answered();
  }
  ASSERT_EQ(run.state(), v1::RUN_STATE_SUCCEEDED) << run.error_message();
  // The answers given before the crash were kept: only the rest were asked again.
  EXPECT_LE(before_crash + after_crash, 40 + 1);  // one answer may have been in flight at the kill
  auto comparisons = util::ReadFile(run_dir_ + "/comparisons/round-1.jsonl");
  ASSERT_TRUE(comparisons.ok());
  int pairs = 0;
  for (absl::string_view line : absl::StrSplit(*comparisons, '\n', absl::SkipEmpty())) {
    Json j = Json::parse(line);
    EXPECT_EQ(j.value("labeler", std::string()), "bot");
    EXPECT_GE(j.value("chosen", std::string()).size(), j.value("rejected", std::string()).size());
    ++pairs;
  }
  EXPECT_GT(pairs, 40);
  EXPECT_TRUE(util::PathExists(run_dir_ + "/comparisons/round-1.samples.jsonl"));
}

}  // namespace
}  // namespace rlhf
