// `rlhf init-run-models`: the models a cluster's services must serve for a run of a config take that run's
// checkpoints (same architecture), are kept when present, and a config that starts from a model of its own is told so.
#include <memory>
#include <string>

#include "common/model/model_config.h"
#include "common/serving/model_store.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/orchestrator/run_config.h"
#include "services/orchestrator/run_setup.h"
#include "tests/testing/test_util.h"
#include "tools/cli/run_command.h"

namespace rlhf::cli {
namespace {

namespace v1 = ::rlhf::v1;
using ::testing::HasSubstr;

TEST(InitRunModelsTest, WritesThePolicyAndRewardModelsARunOfTheBuiltinTaskStartsFrom) {
  const std::string dir = testing::MakeTempDir("init_run_models");
  auto done = InitRunModels("", dir + "/models");
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_THAT(*done, HasSubstr("wrote " + dir + "/models/policy"));
  EXPECT_THAT(*done, HasSubstr("wrote " + dir + "/models/reward"));
  EXPECT_FALSE(util::PathExists(dir + "/models/.init-run-models")) << "the scratch folder is removed";

  // What a run of the built-in task makes for itself (and trains from): the served models must take its weights.
  v1::RunConfig config;
  config.mutable_task()->set_builtin_task(orchestrator::kBuiltinTaskName);
  auto files = orchestrator::PrepareRun(orchestrator::WithDefaults(config), dir + "/run");
  ASSERT_TRUE(files.ok()) << files.status();
  auto run_model = model::ModelConfig::FromFile(files->init_model + "/config.json");
  ASSERT_TRUE(run_model.ok()) << run_model.status();
  for (const char* name : {"policy", "reward"}) {
    auto served = model::ModelConfig::FromFile(dir + "/models/" + name + "/config.json");
    ASSERT_TRUE(served.ok()) << served.status();
    EXPECT_TRUE(model::CheckSameArchitecture(*served, *run_model).ok()) << name;
    EXPECT_TRUE(util::PathExists(dir + "/models/" + name + "/tokenizer.json")) << name;
  }

  // Present models are kept: a second call changes nothing.
  auto before = util::ReadFile(dir + "/models/policy/model.safetensors");
  ASSERT_TRUE(before.ok());
  auto again = InitRunModels("", dir + "/models");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_THAT(*again, HasSubstr("kept " + dir + "/models/policy"));
  EXPECT_EQ(*util::ReadFile(dir + "/models/policy/model.safetensors"), *before);
}

TEST(InitRunModelsTest, AConfigStartingFromItsOwnModelOrABadConfigIsRefusedWithTheField) {
  const std::string dir = testing::MakeTempDir("init_run_models_refused");
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/own.pbtxt",
                                        "task { sft_data_path: \"sft.jsonl\" prompts_path: \"p.jsonl\" }\n"
                                        "model { base_model_dir: \"/models/gpt2\" }\n")
                  .ok());
  auto refused = InitRunModels(dir + "/own.pbtxt", dir + "/models");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("config.model.base_model_dir"));

  ASSERT_TRUE(util::WriteFileAtomically(dir + "/bad.pbtxt", "task { builtin_task: \"instructions\" }\nnonsense: 1\n").ok());
  auto bad = InitRunModels(dir + "/bad.pbtxt", dir + "/models");
  EXPECT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("bad.pbtxt:2"));
  EXPECT_THAT(InitRunModels("", "").status().message(), HasSubstr("--out"));
}

}  // namespace
}  // namespace rlhf::cli
