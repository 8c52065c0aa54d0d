// The loop through the real service binaries on loopback, on the built-in task, shortened to CI size.

#include <stdlib.h>

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
#include "common/tokenizer/tokenizer.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "rlhf/v1/labeling.grpc.pb.h"
#include "rlhf/v1/orchestrator.grpc.pb.h"
#include "services/orchestrator/run_config.h"
#include "tests/e2e/local_suite.h"
#include "tests/testing/labeling_bot.h"
#include "tests/testing/test_util.h"
#include "tests/testing/tiny_model.h"

namespace rlhf {
namespace {

namespace v1 = ::rlhf::v1;
using Json = nlohmann::json;

class LoopTest : public ::testing::Test {
 protected:
  // With `replicas` > 1, that many generation and reward servers, reached through one multi-address target each
  // (as a dns:/// name of a headless Service resolves to every pod).
  void Start(const v1::RunConfig& config, const std::string& run_id, int replicas = 1, const std::string& root = "") {
    e2e::LocalSuiteOptions options;
    options.replicas = replicas;
    options.root = root;
    auto suite = e2e::LocalSuite::Start(config, run_id, options);
    ASSERT_TRUE(suite.ok()) << suite.status();
    suite_ = *std::move(suite);
    auto run = suite_->StartRun();
    ASSERT_TRUE(run.ok()) << run.status();
    run_id_ = run->run_id();
    run_dir_ = suite_->run_dir();
    EXPECT_EQ(run->run_dir(), run_dir_);
  }
  v1::Run WaitForEnd(absl::Duration timeout) {
    auto run = suite_->WaitForEnd(timeout);
    EXPECT_TRUE(run.ok()) << run.status();
    return run.ok() ? *run : v1::Run();
  }
  double MetricSum(const std::string& service, const std::string& metric, const std::string& label) {
    auto sum = suite_->MetricSum(service, metric, label);
    EXPECT_TRUE(sum.ok()) << service << ": " << sum.status();
    return sum.ok() ? *sum : 0;
  }
  e2e::MetricLineCounts MetricLines() {
    auto lines = e2e::ReadMetricLines(run_dir_);
    EXPECT_TRUE(lines.ok()) << lines.status();
    return lines.ok() ? *lines : e2e::MetricLineCounts{};
  }

  std::string run_dir_, run_id_;
  std::unique_ptr<e2e::LocalSuite> suite_;
};

TEST_F(LoopTest, AShortenedLoopRunsEndToEndThroughTheServices) {
  ASSERT_NO_FATAL_FAILURE(Start(e2e::ShortConfig(4), "short"));
  // WatchRun streams every stage to the end of the run.
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  v1::WatchRunRequest watch;
  watch.set_run_id(run_id_);
  watch.set_include_history(true);
  auto reader = suite_->orchestrator().WatchRun(&context, watch);
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
  auto metrics = testing::HttpGet(suite_->Find("orchestrator")->metrics_port, "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_THAT(*metrics, ::testing::HasSubstr("rlhf_orchestrator_runs{state=\"succeeded\"} 1"));
  EXPECT_THAT(*metrics, ::testing::HasSubstr("rlhf_orchestrator_runs{state=\"running\"} 0"));
  EXPECT_THAT(*metrics, ::testing::Not(::testing::HasSubstr("rlhf_orchestrator_stage_progress_ratio{")));
}

TEST_F(LoopTest, AKilledOrchestratorResumesAndFinishesWithCompletedStepsIntact) {
  ASSERT_NO_FATAL_FAILURE(Start(e2e::ShortConfig(12), "killed"));
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
  ASSERT_TRUE(suite_->Kill("orchestrator").ok());
  auto before = MetricLines();
  // A new orchestrator on the same runs root resumes the run by itself.
  const absl::Status restarted = suite_->Restart("orchestrator");
  ASSERT_TRUE(restarted.ok()) << restarted;
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

// The Llama family (RMSNorm, RoPE, grouped-query attention, SiLU-gated MLP) through the same loop: SFT, the reward
// model, PPO with its weight pushes, checkpoints of the family, and the evaluation.
TEST_F(LoopTest, ALlamaFamilyLoopRunsEndToEndThroughTheServices) {
  ASSERT_NO_FATAL_FAILURE(Start(e2e::ShortConfig(3, "llama"), "llama"));
  v1::Run run = WaitForEnd(absl::Minutes(5));
  ASSERT_EQ(run.state(), v1::RUN_STATE_SUCCEEDED) << run.error_message();
  EXPECT_EQ(run.evaluation().num_prompts(), 32);
  ASSERT_GE(run.checkpoints_size(), 3) << "SFT, reward model, PPO";
  for (const v1::CheckpointRecord& checkpoint : run.checkpoints()) {
    std::string dir =
        absl::StartsWith(checkpoint.path(), "/") ? checkpoint.path() : run_dir_ + "/" + checkpoint.path();
    if (!util::PathExists(dir + "/config.json")) dir += "/policy";  // a trainer checkpoint: policy/ and value/
    auto config = util::ReadFile(dir + "/config.json");
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(Json::parse(*config).at("model_type"), "llama") << dir;
  }
  auto lines = MetricLines();
  for (int64_t step = 1; step <= 3; ++step) EXPECT_EQ((lines[{"ppo", 1, step}]), 1) << "ppo step " << step;
  // The policy's new weights reached the generation service after every PPO iteration.
  EXPECT_GE(MetricSum("policy-generation", "rlhf_weight_updates_total", "outcome=\"ok\""), 4);
}

// A user's own chat model and data: a Qwen3 folder with the real Qwen3 tokenizer and chat template
// (`model { base_model_dir }`), demonstrations, prompts and rankings as conversations ({"messages": [...]}). SFT, the
// reward model and PPO render them with the folder's template; the rollouts go to the generation service as
// messages, so the policy's prompts start as the template renders them; the run's reward model judges the evaluation.
TEST_F(LoopTest, AChatModelAUserBringsTrainsOnConversationsThroughTheLoop) {
  const char* data_dir = ::getenv("RLHF_DATA_DIR");
  const std::string tokenizer_dir =
      std::string(data_dir != nullptr && *data_dir != '\0' ? data_dir : RLHF_TEST_DEFAULT_DATA_DIR) + "/qwen3";
  const std::string root = testing::MakeTempDir("chat-suite");
  const std::string inputs = root + "/runs/inputs";  // under the runs root, which the services may read
  testing::TinyModelOptions model;
  model.model_type = "qwen3";
  model.n_layer = 1;
  model.n_embd = 32;
  model.n_head = 2;
  model.n_positions = 128;
  model.tokenizer_dir = tokenizer_dir;
  ASSERT_TRUE(testing::WriteTinyModel(inputs + "/qwen3", model).ok());
  const auto conversation = [](const std::string& question) {
    return R"({"messages":[{"role":"system","content":"Answer briefly."},{"role":"user","content":")" + question +
           R"("}])";
  };
  std::string sft, prompts, eval, comparisons;
  for (int i = 0; i < 12; ++i) {
    const std::string q = absl::StrCat("What is ", i, " plus ", i, "?");
    const std::string a = absl::StrCat(2 * i);
    const std::string c = conversation(q);
    absl::StrAppend(&sft, c.substr(0, c.size() - 1), R"(,{"role":"assistant","content":")", a, "\"}]}\n");
    absl::StrAppend(&prompts, c, "}\n");
    absl::StrAppend(&comparisons, c, R"(,"chosen":")", a, R"(","rejected":"I do not know."})", "\n");
    if (i < 4) absl::StrAppend(&eval, conversation(absl::StrCat("What is ", i, " times 3?")), "}\n");
  }
  ASSERT_TRUE(util::WriteFileAtomically(inputs + "/sft.jsonl", sft).ok());
  ASSERT_TRUE(util::WriteFileAtomically(inputs + "/prompts.jsonl", prompts).ok());
  ASSERT_TRUE(util::WriteFileAtomically(inputs + "/eval.jsonl", eval).ok());
  ASSERT_TRUE(util::WriteFileAtomically(inputs + "/comparisons.jsonl", comparisons).ok());

  v1::RunConfig c;
  c.mutable_task()->set_sft_data_path(inputs + "/sft.jsonl");
  c.mutable_task()->set_prompts_path(inputs + "/prompts.jsonl");
  c.mutable_task()->set_eval_prompts_path(inputs + "/eval.jsonl");
  c.mutable_model()->set_base_model_dir(inputs + "/qwen3");
  c.mutable_labeler()->mutable_dataset()->set_path(inputs + "/comparisons.jsonl");
  c.mutable_sft()->mutable_hparams()->set_epochs(1);
  c.mutable_reward_model()->mutable_hparams()->set_epochs(1);
  c.mutable_ppo()->set_iterations(2);
  c.mutable_ppo()->set_prompts_per_iteration(4);
  c.mutable_ppo()->mutable_sampling()->set_max_new_tokens(8);
  c.mutable_evaluation()->set_num_prompts(4);
  c.mutable_evaluation()->mutable_sampling()->set_max_new_tokens(8);
  ASSERT_NO_FATAL_FAILURE(Start(orchestrator::WithDefaults(c), "chat", 1, root));
  v1::Run run = WaitForEnd(absl::Minutes(5));
  ASSERT_EQ(run.state(), v1::RUN_STATE_SUCCEEDED) << run.error_message();
  EXPECT_EQ(run.evaluation().num_prompts(), 4);
  // The held-out samples' prompts are the rendered conversations: system turn first, the assistant's turn open.
  auto samples = util::ReadFile(run_dir_ + "/eval/sft_samples.jsonl");
  ASSERT_TRUE(samples.ok()) << samples.status();
  auto tokenizer = tokenizer::LoadTokenizer(tokenizer_dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const Json first = Json::parse(samples->substr(0, samples->find('\n')));
  auto prompt_text = (*tokenizer)->Decode(first.at("prompt_ids").get<std::vector<int32_t>>());
  ASSERT_TRUE(prompt_text.ok()) << prompt_text.status();
  EXPECT_EQ(*prompt_text,
            "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nWhat is 0 times 3?<|im_end|>\n"
            "<|im_start|>assistant\n");
  // Every checkpoint carries the folder's tokenizer and chat template.
  for (const v1::CheckpointRecord& checkpoint : run.checkpoints()) {
    std::string dir =
        absl::StartsWith(checkpoint.path(), "/") ? checkpoint.path() : run_dir_ + "/" + checkpoint.path();
    if (!util::PathExists(dir + "/config.json")) dir += "/policy";
    EXPECT_TRUE(util::PathExists(dir + "/tokenizer_config.json")) << dir;
  }
}

TEST_F(LoopTest, EveryGenerationAndRewardReplicaGetsEveryWeightUpdateAndServesCalls) {
  ASSERT_NO_FATAL_FAILURE(Start(e2e::ShortConfig(4), "replicas", /*replicas=*/2));
  v1::Run run = WaitForEnd(absl::Minutes(5));
  ASSERT_EQ(run.state(), v1::RUN_STATE_SUCCEEDED) << run.error_message();
  for (const std::string kind : {"policy-generation", "reward-scoring"}) {
    const std::string one = kind, two = kind + "-2";
    const double updates = MetricSum(one, "rlhf_weight_updates_total", "outcome=\"ok\"");
    // Generation: the SFT checkpoint, then a push per PPO iteration, then SFT again and PPO for the evaluation.
    EXPECT_GE(updates, kind == "policy-generation" ? 5 : 1) << kind;
    EXPECT_EQ(MetricSum(two, "rlhf_weight_updates_total", "outcome=\"ok\""), updates)
        << kind << ": both replicas get every update";
    const std::string method = kind == "policy-generation" ? "/rlhf.v1.PolicyGenerationService/Generate"
                                                           : "/rlhf.v1.RewardScoringService/Score";
    for (const std::string& replica : {one, two}) {
      EXPECT_GT(MetricSum(replica, "rlhf_rpc_requests_total", "method=\"" + method + "\""), 0)
          << replica << " served no " << method << ": calls are not spread over the replicas";
    }
  }
}

TEST_F(LoopTest, PeopleAtTheLabelingQueueRankTheComparisonsEvenAcrossALabelingServiceCrash) {
  v1::RunConfig config = e2e::ShortConfig(2);
  config.mutable_comparisons()->set_num_prompts(40);
  config.mutable_labeler()->mutable_human_queue()->mutable_task_timeout()->set_seconds(5);  // a task in flight at the crash comes back soon
  ASSERT_NO_FATAL_FAILURE(Start(config, "human"));
  int before_crash = 0;
  {
    testing::LabelingBot bot(suite_->Address("labeling"), "bot");
    const absl::Time deadline = absl::Now() + absl::Minutes(4);
    while (bot.answered() < 15 && absl::Now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    before_crash = bot.answered();
    ASSERT_GE(before_crash, 15) << "the bot got no tasks";
    ASSERT_TRUE(suite_->Kill("labeling").ok());
  }
  const absl::Status restarted = suite_->Restart("labeling");
  ASSERT_TRUE(restarted.ok()) << restarted;
  int after_crash = 0;
  v1::Run run;
  {
    testing::LabelingBot bot(suite_->Address("labeling"), "bot");
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
