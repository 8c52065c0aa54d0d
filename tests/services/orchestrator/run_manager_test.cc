// StartRun confines the folders and files a run config names (validated without running anything).
#include "services/orchestrator/run_manager.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/orchestrator/run_config.h"
#include "services/orchestrator/run_setup.h"
#include "tests/testing/test_util.h"

namespace rlhf::orchestrator {
namespace {

using ::testing::HasSubstr;

class RunManagerPathsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("runs");
    ASSERT_TRUE(util::MakeDirectories(dir_ + "/data").ok());
    ASSERT_TRUE(util::WriteFileAtomically(dir_ + "/data/sft.jsonl", "{}\n").ok());
    ASSERT_TRUE(util::WriteFileAtomically(dir_ + "/data/prompts.jsonl", "{}\n").ok());
    ASSERT_TRUE(util::WriteFileAtomically(dir_ + "/data/comparisons.jsonl", "{}\n").ok());
    ASSERT_TRUE(util::WriteFileAtomically(dir_ + "/secret.jsonl", "{}\n").ok());
    RunManagerOptions options;
    options.runs_root = dir_ + "/runs";
    options.path_roots = {dir_ + "/data"};
    options.resume = false;
    auto manager = RunManager::Create(options);
    ASSERT_TRUE(manager.ok()) << manager.status();
    manager_ = *std::move(manager);
  }

  // A validate-only StartRun of the built-in task (or of data files, when given).
  absl::StatusOr<v1::Run> Validate(const std::string& run_dir, const std::string& sft_data = "") {
    v1::StartRunRequest request;
    request.set_run_id("r1");
    request.set_validate_only(true);
    *request.mutable_config() = DefaultRunConfig();
    v1::ServiceAddresses* s = request.mutable_config()->mutable_services();
    s->set_generation("127.0.0.1:1");
    s->set_reference("127.0.0.1:2");
    s->set_reward("127.0.0.1:3");
    s->set_trainer("127.0.0.1:4");
    request.mutable_config()->set_run_dir(run_dir);
    if (!sft_data.empty()) {
      // A user's data: a byte-level model from scratch, and rankings from a file.
      v1::RunConfig* c = request.mutable_config();
      c->clear_task();
      c->mutable_task()->set_sft_data_path(sft_data);
      c->mutable_task()->set_prompts_path(dir_ + "/data/prompts.jsonl");
      c->clear_model();
      v1::ModelConfig* m = c->mutable_model()->mutable_config();
      m->set_n_layer(2);
      m->set_n_embd(64);
      m->set_n_head(4);
      m->set_n_positions(64);
      c->clear_labeler();
      c->mutable_labeler()->mutable_dataset()->set_path(dir_ + "/data/comparisons.jsonl");
    }
    return manager_->StartRun(request);
  }

  std::string dir_;
  std::unique_ptr<RunManager> manager_;
};

TEST_F(RunManagerPathsTest, RunFoldersStayInsideTheRunsRoot) {
  for (const std::string& run_dir : {std::string("/tmp/elsewhere"), std::string("../escaped"), dir_ + "/data/x"}) {
    auto run = Validate(run_dir);
    EXPECT_EQ(run.status().code(), absl::StatusCode::kPermissionDenied) << run_dir;
    EXPECT_THAT(run.status().message(), HasSubstr("config.run_dir")) << run_dir;
  }
  EXPECT_TRUE(Validate("my-run").ok());  // relative: under the runs root, not the working folder
  EXPECT_TRUE(Validate("").ok());
}

TEST_F(RunManagerPathsTest, ANewRunDoesNotTakeOverAFolderThatHoldsFiles) {
  ASSERT_TRUE(util::MakeDirectories(dir_ + "/runs/taken").ok());
  ASSERT_TRUE(util::WriteFileAtomically(dir_ + "/runs/taken/notes.txt", "mine\n").ok());
  auto run = Validate("taken");
  EXPECT_EQ(run.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(run.status().message(), HasSubstr("already holds files"));
  ASSERT_TRUE(util::MakeDirectories(dir_ + "/runs/empty").ok());
  EXPECT_TRUE(Validate("empty").ok());
  // A folder PrepareRun prepared for the run (what `rlhf run` does before StartRun) is the run's.
  ASSERT_TRUE(PrepareRun(DefaultRunConfig(), dir_ + "/runs/prepared").ok());
  auto prepared = Validate("prepared");
  EXPECT_TRUE(prepared.ok()) << prepared.status();
}

TEST_F(RunManagerPathsTest, DataFilesMustLieInsideThePathRoots) {
  auto outside = Validate("", dir_ + "/secret.jsonl");
  EXPECT_EQ(outside.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(outside.status().message(), HasSubstr("config.task.sft_data_path"));
  EXPECT_EQ(Validate("", "/etc/passwd").status().code(), absl::StatusCode::kPermissionDenied);
  auto inside = Validate("", "sft.jsonl");  // relative: from the first root
  ASSERT_TRUE(inside.ok()) << inside.status();
  EXPECT_THAT(inside->config().task().sft_data_path(), ::testing::EndsWith("/data/sft.jsonl"));
  EXPECT_EQ(inside->config().task().sft_data_path().front(), '/');
}

}  // namespace
}  // namespace rlhf::orchestrator
