#include "services/orchestrator/run_config.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_util.h"

namespace rlhf::orchestrator {
namespace {

using ::testing::HasSubstr;

v1::RunConfig WithServices(v1::RunConfig config) {
  config.mutable_services()->set_generation("127.0.0.1:1");
  config.mutable_services()->set_reference("127.0.0.1:2");
  config.mutable_services()->set_reward("127.0.0.1:3");
  config.mutable_services()->set_trainer("127.0.0.1:4");
  return config;
}

TEST(RunConfig, DefaultsForTheBuiltinTaskAreTheSettingsKnownToWork) {
  const v1::RunConfig c = DefaultRunConfig();
  EXPECT_EQ(c.task().builtin_task(), "instructions");
  EXPECT_EQ(c.model().config().n_layer(), 2);
  EXPECT_EQ(c.model().config().n_embd(), 128);
  EXPECT_EQ(c.model().tokenizer(), v1::TOKENIZER_KIND_WORD);
  EXPECT_EQ(c.comparisons().responses_per_prompt(), 4);
  EXPECT_DOUBLE_EQ(c.ppo().hparams().kl().beta(), 0.1);
  EXPECT_DOUBLE_EQ(c.ppo().hparams().policy_optimizer().learning_rate(), 2e-5);
  EXPECT_DOUBLE_EQ(c.labeler().simulated().noise_rate(), 0.25);
  EXPECT_EQ(c.rounds(), 1);
  EXPECT_TRUE(ValidateRunConfig(WithServices(c)).ok()) << ValidateRunConfig(WithServices(c));
}

TEST(RunConfig, ExplicitValuesSurviveTheDefaults) {
  v1::RunConfig c;
  c.mutable_task()->set_builtin_task("instructions");
  c.mutable_ppo()->set_iterations(7);
  c.mutable_ppo()->mutable_hparams()->mutable_kl()->set_beta(0.0);
  c = WithDefaults(c);
  EXPECT_EQ(c.ppo().iterations(), 7);
  EXPECT_DOUBLE_EQ(c.ppo().hparams().kl().beta(), 0.0) << "an explicit 0 disables the KL penalty";
}

TEST(RunConfig, ValidationNamesTheField) {
  v1::RunConfig c = WithServices(DefaultRunConfig());
  c.mutable_ppo()->mutable_hparams()->set_clip_range(-1);
  EXPECT_THAT(std::string(ValidateRunConfig(c).message()), HasSubstr("config.ppo.hparams.clip_range"));
  c = WithServices(DefaultRunConfig());
  c.mutable_comparisons()->set_responses_per_prompt(12);
  EXPECT_THAT(std::string(ValidateRunConfig(c).message()), HasSubstr("config.comparisons.responses_per_prompt"));
  c = WithServices(DefaultRunConfig());
  c.mutable_task()->set_builtin_task("chess");
  EXPECT_THAT(std::string(ValidateRunConfig(c).message()), HasSubstr("config.task.builtin_task"));
  c = DefaultRunConfig();
  EXPECT_THAT(std::string(ValidateRunConfig(c).message()), HasSubstr("config.services.generation"));
  v1::RunConfig user;
  user.mutable_model()->set_base_model_dir("/models/gpt2");
  EXPECT_THAT(std::string(ValidateRunConfig(WithServices(WithDefaults(user))).message()),
              HasSubstr("config.task.sft_data_path"));
}

// PPO has one sampling temperature: the trainer's recompute takes the rollouts', and a config that sets another is
// refused rather than silently training on wrong ratios.
TEST(RunConfig, PpoHasOneSamplingTemperature) {
  v1::RunConfig c;
  c.mutable_task()->set_builtin_task("instructions");
  c.mutable_ppo()->mutable_sampling()->set_temperature(0.7f);
  c = WithServices(WithDefaults(c));
  EXPECT_FLOAT_EQ(c.ppo().hparams().sampling_temperature(), 0.7f);
  EXPECT_TRUE(ValidateRunConfig(c).ok());
  v1::RunConfig other;
  other.mutable_task()->set_builtin_task("instructions");
  other.mutable_ppo()->mutable_hparams()->set_sampling_temperature(0.7f);  // rollouts at the default 1.0
  const absl::Status status = ValidateRunConfig(WithServices(WithDefaults(other)));
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("config.ppo.hparams.sampling_temperature"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("differs from ppo.sampling.temperature"));
}

TEST(RunConfig, AHumanQueueNeedsTheLabelingServiceAndSensibleCounts) {
  v1::RunConfig c = WithServices(DefaultRunConfig());
  c.mutable_labeler()->mutable_human_queue()->set_min_completed(10);
  EXPECT_THAT(std::string(ValidateRunConfig(c).message()), HasSubstr("config.services.labeling"));
  c.mutable_services()->set_labeling("127.0.0.1:5");
  EXPECT_TRUE(ValidateRunConfig(c).ok()) << ValidateRunConfig(c);
  c.mutable_labeler()->mutable_human_queue()->set_min_completed(c.comparisons().num_prompts() + 1);
  EXPECT_THAT(std::string(ValidateRunConfig(c).message()), HasSubstr("config.labeler.human_queue.min_completed"));
  c.mutable_labeler()->mutable_human_queue()->set_min_completed(0);
  c.mutable_labeler()->mutable_human_queue()->mutable_max_wait()->set_seconds(-5);
  EXPECT_THAT(std::string(ValidateRunConfig(c).message()), HasSubstr("config.labeler.human_queue.max_wait"));
}

TEST(RunConfig, ReadsTextAndJsonAndReportsWhereAFileIsWrong) {
  const std::string dir = testing::MakeTempDir("config");
  std::ofstream(dir + "/ok.textproto") << "task { builtin_task: \"instructions\" }\nppo { iterations: 3 }\n";
  auto text = ReadRunConfig(dir + "/ok.textproto");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->ppo().iterations(), 3);
  std::ofstream(dir + "/ok.json") << R"({"task": {"builtinTask": "instructions"}, "rounds": 2})";
  auto json = ReadRunConfig(dir + "/ok.json");
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(json->rounds(), 2);
  std::ofstream(dir + "/bad.textproto") << "task { builtin_task: \"instructions\" }\nppo { iteratons: 3 }\n";
  auto bad = ReadRunConfig(dir + "/bad.textproto");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("bad.textproto:2:"));
  std::ofstream(dir + "/bad.json") << R"({"rounds": "many"})";
  EXPECT_THAT(std::string(ReadRunConfig(dir + "/bad.json").status().message()), HasSubstr("bad.json"));
  EXPECT_EQ(ReadRunConfig(dir + "/missing.json").status().code(), absl::StatusCode::kNotFound);
}

// The run configs deploy/README.md tells operators to use on docker-compose and Kubernetes.
TEST(RunConfig, TheDeploymentRunConfigsAreValidAndNameEveryService) {
  const char* source = std::getenv("RLHF_SOURCE_DIR");
  ASSERT_NE(source, nullptr);
  for (const char* name : {"compose.pbtxt", "kubernetes.pbtxt"}) {
    const std::string path = absl::StrCat(source, "/deploy/configs/", name);
    auto config = ReadRunConfig(path);
    ASSERT_TRUE(config.ok()) << config.status();
    const v1::RunConfig full = WithDefaults(*config);
    EXPECT_TRUE(ValidateRunConfig(full).ok()) << path << ": " << ValidateRunConfig(full);
    const v1::ServiceAddresses& s = full.services();
    for (const std::string& address : {s.generation(), s.reference(), s.reward(), s.trainer(), s.labeling()}) {
      EXPECT_FALSE(address.empty()) << path << ": the cluster's services are not started by the run";
    }
    EXPECT_TRUE(full.model().has_config()) << path << ": the run's model must be the one init-run-models writes";
  }
}

TEST(RunConfigDifference, NamesTheFirstFieldThatDiffersAndIgnoresServiceAddresses) {
  const v1::RunConfig run = WithServices(DefaultRunConfig());
  v1::RunConfig moved = run;
  moved.mutable_services()->set_generation("10.0.0.7:50051");
  EXPECT_EQ(RunConfigDifference(run, moved), "") << "a resumed run may get new service addresses";
  v1::RunConfig other = run;
  other.mutable_ppo()->set_iterations(run.ppo().iterations() + 1);
  EXPECT_EQ(RunConfigDifference(run, other),
            absl::StrCat("config.ppo.iterations: ", run.ppo().iterations(), " in the run, ",
                         run.ppo().iterations() + 1, " requested"));
  v1::RunConfig labeler = run;
  labeler.mutable_labeler()->mutable_judge()->set_reward_service_address("127.0.0.1:9");
  EXPECT_THAT(RunConfigDifference(run, labeler), HasSubstr("config.labeler."));
}

}  // namespace
}  // namespace rlhf::orchestrator
