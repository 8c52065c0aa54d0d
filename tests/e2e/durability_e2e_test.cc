// What a user does when a run meets a crash or a full disk, through the real binaries on loopback: `rlhf run` again
// after its orchestrator was killed, `rlhf run --orchestrator` attaching to a run that is already running (and
// refusing another config under the same run id), and a run whose disk fills up mid-PPO and resumes once space
// returns.
#include <signal.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/local_suite.h"
#include "tests/testing/small_filesystem.h"
#include "tests/testing/test_util.h"

namespace rlhf {
namespace {

namespace v1 = ::rlhf::v1;
using Json = nlohmann::json;
using ::testing::HasSubstr;

const std::string kRlhf = std::string(RLHF_BINARY_DIR) + "/tools/cli/rlhf";

std::string WriteConfig(const std::string& path, const v1::RunConfig& config) {
  std::string text;
  EXPECT_TRUE(google::protobuf::TextFormat::PrintToString(config, &text));
  EXPECT_TRUE(util::WriteFileAtomically(path, text).ok());
  return path;
}

// The highest PPO step in the run's metrics.jsonl (0 when none).
int64_t LastPpoStep(const std::string& run_dir) {
  auto lines = e2e::ReadMetricLines(run_dir);
  int64_t last = 0;
  if (!lines.ok()) return last;
  for (const auto& [key, count] : *lines) {
    if (std::get<0>(key) == "ppo") last = std::max(last, std::get<2>(key));
  }
  return last;
}

// Waits (bounded) until the run has logged PPO step `step`.
bool WaitForPpoStep(const std::string& run_dir, int64_t step, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (LastPpoStep(run_dir) >= step) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// Every step of the run logged once: each PPO iteration, and each step of the other stages (an epoch's last SFT
// step has a second line, its validation, as in any run).
void ExpectEveryStepOnce(const std::string& run_dir, int64_t iterations) {
  auto lines = e2e::ReadMetricLines(run_dir);
  ASSERT_TRUE(lines.ok()) << lines.status();
  auto count = [&](const std::string& stage, int round, int64_t step) {
    auto it = lines->find({stage, round, step});
    return it == lines->end() ? 0 : it->second;
  };
  for (int64_t step = 1; step <= iterations; ++step) EXPECT_EQ(count("ppo", 1, step), 1) << "ppo step " << step;
  EXPECT_EQ(count("sft", 0, 1), 1);
  EXPECT_EQ(count("reward_model", 1, 1), 1);
  EXPECT_EQ(count("eval", 0, 32), 1);
  int comparisons = 0;
  for (const auto& [key, n] : *lines) {
    EXPECT_LE(n, 2) << std::get<0>(key) << " round " << std::get<1>(key) << " step " << std::get<2>(key);
    if (std::get<0>(key) == "comparisons") comparisons += n;
  }
  EXPECT_EQ(comparisons, 1);
}

TEST(RlhfRun, RunningItAgainAfterItsOrchestratorWasKilledFinishesTheRun) {
  const std::string root = testing::MakeTempDir("rlhf_run_again");
  const std::string config = WriteConfig(root + "/run.textproto", e2e::ShortConfig(12));
  const std::string run_dir = root + "/runs/b";
  const std::vector<std::string> command = {kRlhf, "run", config, "--run_dir=" + run_dir,
                                            std::string("--bin_dir=") + RLHF_BINARY_DIR};
  {
    auto first = e2e::ChildProcess::Spawn(command, root + "/first.out");
    ASSERT_TRUE(first.ok()) << first.status();
    // Past the checkpoint of iteration 5 (`rlhf run` checkpoints every 5), so that the resume starts after it.
    ASSERT_TRUE(WaitForPpoStep(run_dir, 6, absl::Minutes(5))) << (*first)->Output();
    auto orchestrator = e2e::FindChild((*first)->pid(), "rlhf-orchestrator");
    ASSERT_TRUE(orchestrator.ok()) << orchestrator.status();
    ASSERT_EQ(::kill(*orchestrator, SIGKILL), 0);
    auto code = (*first)->Wait(absl::Minutes(2));
    ASSERT_TRUE(code.ok()) << code.status();
    EXPECT_EQ(*code, 1) << (*first)->Output();
    EXPECT_THAT((*first)->Output(), HasSubstr("again to resume it"));
  }
  // What it told the user to do.
  auto second = e2e::ChildProcess::Spawn(command, root + "/second.out");
  ASSERT_TRUE(second.ok()) << second.status();
  auto code = (*second)->Wait(absl::Minutes(6));
  ASSERT_TRUE(code.ok()) << code.status() << "\n" << (*second)->Output();
  EXPECT_EQ(*code, 0) << (*second)->Output();
  EXPECT_THAT((*second)->Output(), HasSubstr("PPO vs SFT win-rate"));
  EXPECT_THAT((*second)->Output(), HasSubstr("resuming PPO after iteration"));
  ExpectEveryStepOnce(run_dir, 12);
  EXPECT_THAT(e2e::TempFilesUnder(run_dir), ::testing::IsEmpty());
}

TEST(RlhfRun, AttachesToTheSameRunAlreadyRunningAndRefusesAnotherConfigUnderItsId) {
  auto suite = e2e::LocalSuite::Start(e2e::ShortConfig(6), "attach");
  ASSERT_TRUE(suite.ok()) << suite.status();
  e2e::LocalSuite& s = **suite;
  auto started = s.StartRun();
  ASSERT_TRUE(started.ok()) << started.status();
  const std::string root = s.root();
  // StartRun again with the same config is the same run: nothing new starts.
  auto again = s.StartRun();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->run_id(), "attach");
  EXPECT_EQ(again->create_time().seconds(), started->create_time().seconds());
  // Another config under the same id is refused, naming what differs; the run goes on.
  v1::RunConfig other = s.config();
  other.mutable_ppo()->set_iterations(8);
  auto refused = s.StartRun(other);
  EXPECT_TRUE(absl::IsAlreadyExists(refused.status())) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("ppo.iterations"));
  const std::string orchestrator = "--orchestrator=" + s.Address("orchestrator");
  auto cli_refused = e2e::ChildProcess::Spawn(
      {kRlhf, "run", WriteConfig(root + "/other.textproto", other), orchestrator, "--run_id=attach"},
      root + "/refused.out");
  ASSERT_TRUE(cli_refused.ok());
  auto code = (*cli_refused)->Wait(absl::Minutes(1));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 1);
  EXPECT_THAT((*cli_refused)->Output(), HasSubstr("ppo.iterations"));
  // `rlhf run` with the run's own config follows it to the end and prints the results.
  auto attached = e2e::ChildProcess::Spawn(
      {kRlhf, "run", WriteConfig(root + "/same.textproto", s.config()), orchestrator, "--run_id=attach"},
      root + "/attached.out");
  ASSERT_TRUE(attached.ok());
  code = (*attached)->Wait(absl::Minutes(5));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << (*attached)->Output();
  EXPECT_THAT((*attached)->Output(), HasSubstr("PPO vs SFT win-rate"));
  auto run = s.GetRun();
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->state(), v1::RUN_STATE_SUCCEEDED) << run->error_message();
  ExpectEveryStepOnce(s.run_dir(), 6);
}

TEST(DiskFull, ARunStopsWithResourceExhaustedKeepsWhatItCompletedAndResumesOnceSpaceReturns) {
  RLHF_MOUNT_SMALL_FILESYSTEM_OR_SKIP(fs, 96 << 20);
  e2e::LocalSuiteOptions options;
  options.runs_root = fs->path() + "/runs";
  auto suite = e2e::LocalSuite::Start(e2e::ShortConfig(8), "full", options);
  ASSERT_TRUE(suite.ok()) << suite.status();
  e2e::LocalSuite& s = **suite;
  ASSERT_TRUE(s.StartRun().ok());
  ASSERT_TRUE(WaitForPpoStep(s.run_dir(), 3, absl::Minutes(5)));
  auto filled = fs->Fill();
  ASSERT_TRUE(filled.ok()) << filled.status();
  auto failed = s.WaitForEnd(absl::Minutes(3));
  ASSERT_TRUE(failed.ok()) << failed.status();
  ASSERT_EQ(failed->state(), v1::RUN_STATE_FAILED) << "the run went on with a full disk";
  EXPECT_THAT(failed->error_message(), HasSubstr("No space left on device"));
  EXPECT_THAT(failed->error_message(), HasSubstr("free space"));
  // What it completed is intact: progress, every metrics line whole, the checkpoint it names complete, and no
  // temporary file left by a failed write.
  auto progress_text = util::ReadFile(s.run_dir() + "/progress.json");
  ASSERT_TRUE(progress_text.ok());
  Json progress = Json::parse(*progress_text, nullptr, false);
  ASSERT_FALSE(progress.is_discarded());
  const std::string checkpoint = progress["rounds"][0].value("trainer_checkpoint", std::string());
  ASSERT_FALSE(checkpoint.empty());
  EXPECT_TRUE(util::PathExists(checkpoint + "/policy/model.safetensors"));
  EXPECT_TRUE(util::PathExists(checkpoint + "/trainer_state.json"));
  EXPECT_TRUE(e2e::ReadMetricLines(s.run_dir()).ok());
  EXPECT_THAT(e2e::TempFilesUnder(fs->path()), ::testing::IsEmpty());
  // Space returns; the same StartRun resumes the run, which finishes with every step once.
  ASSERT_TRUE(fs->Free().ok());
  auto resumed = s.StartRun();
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  auto run = s.WaitForEnd(absl::Minutes(5));
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->state(), v1::RUN_STATE_SUCCEEDED) << run->error_message();
  ExpectEveryStepOnce(s.run_dir(), 8);
  EXPECT_THAT(e2e::TempFilesUnder(s.run_dir()), ::testing::IsEmpty());
  auto run_json = util::ReadFile(s.run_dir() + "/run.json");
  ASSERT_TRUE(run_json.ok());
  EXPECT_THAT(*run_json, HasSubstr("RUN_STATE_SUCCEEDED"));
}

}  // namespace
}  // namespace rlhf
