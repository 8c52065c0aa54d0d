// Crash anywhere: a shortened run (comparisons ranked by a bot at the labeling queue, so that all six services take
// part) has its services killed with SIGKILL in turn, each service once in every stage (SFT, the SFT policy's
// samples, comparisons, reward model, PPO, evaluation) at seeded random points of it, each restarted at once; and all
// of them at once as each stage after SFT begins. The run must finish with the final
// table of an uninterrupted run of the same seed, every metrics line exactly once (as many as the uninterrupted run
// has, with the same values), and no temporary file left in the run directory.
//
// Kill points are positions in the run's progress, read from WatchRun events, never times: a kill fires at the first
// event at or past its position. Set RLHF_CRASH_SEED to try other points (the schedule is printed).
#include <algorithm>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/runtime/client.h"
#include "common/task/evaluation.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/local_suite.h"
#include "tests/testing/labeling_bot.h"
#include "tools/report/report.h"

namespace rlhf {
namespace {

namespace v1 = ::rlhf::v1;
using Json = nlohmann::json;

const std::vector<std::string> kServices = {"orchestrator", "policy-generation", "reference-logprob",
                                            "reward-scoring", "ppo-trainer", "labeling"};
constexpr int kPhases = 6;
const char* const kPhaseNames[kPhases] = {"SFT", "SFT samples", "comparisons", "reward model", "PPO", "evaluation"};

v1::RunConfig CrashConfig() {
  v1::RunConfig c = e2e::ShortConfig(6);
  c.mutable_sft()->mutable_hparams()->set_max_steps(24);
  c.mutable_comparisons()->set_num_prompts(32);
  c.mutable_evaluation()->set_num_prompts(128);  // long enough to be caught in the act
  c.mutable_labeler()->Clear();
  // A task assigned when the labeling service dies comes back to the queue soon.
  c.mutable_labeler()->mutable_human_queue()->mutable_task_timeout()->set_seconds(3);
  return c;
}

// Where a run is, as one number that grows as the run goes (it steps back only when a resume redoes work): the phase
// (SFT, then the SFT policy's samples, which the orchestrator reports as evaluation events, comparisons, reward
// model, PPO, the evaluation itself), then the step within it.
class ProgressTracker {
 public:
  int64_t Position(const v1::RunEvent& e) {
    int phase = 0;
    switch (e.stage()) {
      case v1::STAGE_COMPARISONS: phase = 2; seen_comparisons_ = true; break;
      case v1::STAGE_REWARD_MODEL: phase = 3; break;
      case v1::STAGE_PPO: phase = 4; break;
      case v1::STAGE_EVALUATION: phase = seen_comparisons_ ? 5 : 1; break;
      default: phase = 0;
    }
    return int64_t{phase} * 1000000 + std::max<int64_t>(0, e.step());
  }
  static int Phase(int64_t position) { return static_cast<int>(position / 1000000); }

 private:
  bool seen_comparisons_ = false;
};

struct RunResult {
  std::string table;                            // the final table, as `rlhf run` prints it
  e2e::MetricLineCounts lines;                  // metrics.jsonl: (stage, round, step) -> lines
  std::map<std::string, double> values;         // "<stage>/<round>/<step>/<metric>" -> value, timings left out
  std::vector<int64_t> positions;               // progress positions of the WatchRun events, in order
  std::vector<std::string> temp_files;          // temporary files left in the run directory
};

absl::StatusOr<RunResult> Collect(const std::string& run_dir) {
  RunResult r;
  auto summary = task::ReadEvalSummary(run_dir + "/eval/summary.json");
  if (!summary.ok()) return summary.status();
  r.table = report::FormatSummaryTable(*summary);
  auto lines = e2e::ReadMetricLines(run_dir);
  if (!lines.ok()) return lines.status();
  r.lines = *lines;
  auto text = util::ReadFile(run_dir + "/metrics.jsonl");
  if (!text.ok()) return text.status();
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    Json j = Json::parse(line);
    const std::string prefix =
        absl::StrCat(j.value("stage", std::string()), "/", j.value("round", 0), "/", j.value("step", int64_t{0}), "/");
    for (const auto& [name, value] : j["metrics"].items()) {
      if (name.find("second") != std::string::npos) continue;  // timings
      // Two lines of one step (a training step and its epoch's validation) have different metrics.
      r.values[prefix + name] = value.get<double>();
    }
  }
  r.temp_files = e2e::TempFilesUnder(run_dir);
  return r;
}

// Follows the suite's run over WatchRun, one stream at a time (a new one after the orchestrator restarts).
class Follower {
 public:
  enum class Outcome { kEnded, kStopped, kBroken };

  explicit Follower(e2e::LocalSuite* suite) : suite_(suite) {}

  // Reads events until the run ends (kEnded), `stop(position)` returns true (kStopped: the stream is closed, so the
  // caller may kill and restart services, the orchestrator too), the stream breaks or `deadline` passes (kBroken).
  template <typename Stop>
  Outcome Follow(absl::Time deadline, Stop stop) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(deadline));
    v1::WatchRunRequest watch;
    watch.set_run_id(suite_->run_id());
    watch.set_include_history(true);
    auto reader = suite_->orchestrator().WatchRun(&context, watch);
    v1::RunEvent event;
    Outcome outcome = Outcome::kBroken;
    while (reader->Read(&event)) {
      const v1::RunState state = event.state_change().current();
      if (event.has_state_change() && (state == v1::RUN_STATE_SUCCEEDED || state == v1::RUN_STATE_FAILED ||
                                       state == v1::RUN_STATE_CANCELLED)) {
        last_state_ = state;
        last_message_ = event.message();
        outcome = Outcome::kEnded;
        break;
      }
      if (stop(tracker_.Position(event))) {
        outcome = Outcome::kStopped;
        break;
      }
    }
    if (outcome != Outcome::kBroken) context.TryCancel();
    while (reader->Read(&event)) {
    }
    reader->Finish();
    return outcome;
  }
  v1::RunState last_state() const { return last_state_; }
  const std::string& last_message() const { return last_message_; }

 private:
  e2e::LocalSuite* suite_;
  ProgressTracker tracker_;
  v1::RunState last_state_ = v1::RUN_STATE_UNSPECIFIED;
  std::string last_message_;
};

absl::StatusOr<std::unique_ptr<e2e::LocalSuite>> StartSuite(const std::string& run_id) {
  e2e::LocalSuiteOptions options;
  options.checkpoint_every = 2;
  auto suite = e2e::LocalSuite::Start(CrashConfig(), run_id, options);
  if (!suite.ok()) return suite.status();
  auto run = (*suite)->StartRun();
  if (!run.ok()) return run.status();
  return suite;
}

TEST(CrashAnywhere, KilledServicesRestartedAtRandomPointsOfEveryStageLeaveTheSameFinishedRun) {
  const char* seed_env = std::getenv("RLHF_CRASH_SEED");
  uint64_t seed = 20240611;
  if (seed_env != nullptr) {
    ASSERT_TRUE(absl::SimpleAtoi(seed_env, &seed)) << "RLHF_CRASH_SEED=" << seed_env;
  }

  // The uninterrupted run: the expected result, and the progress positions its events go through.
  RunResult expected;
  {
    auto suite = StartSuite("calm");
    ASSERT_TRUE(suite.ok()) << suite.status();
    testing::LabelingBot bot((*suite)->Address("labeling"), "bot");
    Follower follower(suite->get());
    std::vector<int64_t> positions;
    const absl::Time deadline = absl::Now() + absl::Minutes(5);
    while (absl::Now() < deadline &&
           follower.Follow(deadline, [&](int64_t p) {
             positions.push_back(p);
             return false;
           }) != Follower::Outcome::kEnded) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_EQ(follower.last_state(), v1::RUN_STATE_SUCCEEDED) << follower.last_message();
    auto collected = Collect((*suite)->run_dir());
    ASSERT_TRUE(collected.ok()) << collected.status();
    expected = *collected;
    expected.positions = positions;
  }

  // The kill schedule: in each phase, every service once, in a seeded order, at positions drawn (seeded) from that
  // phase's positions in the uninterrupted run.
  std::mt19937_64 rng(seed);
  struct Kill {
    int64_t position;
    std::string service;
    bool during_run = false;
  };
  std::vector<Kill> kills;
  for (int phase = 0; phase < kPhases; ++phase) {
    std::vector<int64_t> in_phase;
    for (int64_t p : expected.positions) {
      if (ProgressTracker::Phase(p) == phase) in_phase.push_back(p);
    }
    ASSERT_FALSE(in_phase.empty()) << "the uninterrupted run went through no " << kPhaseNames[phase] << " event";
    std::vector<int64_t> points;
    for (size_t k = 0; k < kServices.size(); ++k) points.push_back(in_phase[rng() % in_phase.size()]);
    std::sort(points.begin(), points.end());
    std::vector<std::string> order = kServices;
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t k = 0; k < points.size(); ++k) kills.push_back({points[k], order[k]});
  }
  std::string schedule;
  for (const Kill& k : kills) {
    absl::StrAppend(&schedule, " ", k.service, "@", kPhaseNames[ProgressTracker::Phase(k.position)], ":",
                    k.position % 1000000);
  }
  std::printf("seed %llu, kills:%s\n", static_cast<unsigned long long>(seed), schedule.c_str());

  // The same run, killed.
  auto suite = StartSuite("crashed");
  ASSERT_TRUE(suite.ok()) << suite.status();
  e2e::LocalSuite& s = **suite;
  auto bot = std::make_unique<testing::LabelingBot>(s.Address("labeling"), "bot");
  Follower follower(&s);
  size_t next = 0;
  int64_t reached = -1;
  absl::Status failure;
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + absl::Minutes(10);
  // One kill at a time, with an event of the run in between: kills due at one position land as the run goes on
  // (resuming, redoing), not all at the same instant. And at the first event seen of each phase after SFT, every
  // service at once, the orchestrator first: the run resumes against services that all lost what it gave them, and
  // must bring each back (weights, reward model, trainer state) from its own files. (A short phase may pass while
  // another kill is under way; it then goes without.)
  bool event_since_kill = true;
  int restarted_all_at = 0;  // phases up to this one had their full restart
  std::vector<std::string> full_restarts;
  auto full_restart_due = [&] { return ProgressTracker::Phase(reached) > restarted_all_at; };
  auto due = [&] {
    return full_restart_due() || (event_since_kill && next < kills.size() && kills[next].position <= reached);
  };
  while (absl::Now() < deadline && failure.ok()) {
    const Follower::Outcome outcome = follower.Follow(deadline, [&](int64_t p) {
      reached = std::max(reached, p);
      event_since_kill = true;
      return due();
    });
    if (outcome == Follower::Outcome::kEnded) break;
    if (full_restart_due()) {
      restarted_all_at = ProgressTracker::Phase(reached);
      full_restarts.push_back(kPhaseNames[restarted_all_at]);
      for (const std::string& service : kServices) {
        if (failure.ok()) failure = s.Kill(service);
      }
      for (auto it = kServices.rbegin(); it != kServices.rend() && failure.ok(); ++it) failure = s.Restart(*it);
      event_since_kill = false;
    } else if (due()) {
      Kill& k = kills[next++];
      failure = s.Kill(k.service);
      if (failure.ok()) failure = s.Restart(k.service);
      k.during_run = true;
      event_since_kill = false;
    }
    if (outcome == Follower::Outcome::kBroken) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  bot.reset();
  ASSERT_TRUE(failure.ok()) << failure;
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  int during_run = 0;
  std::map<std::string, int> per_service;
  for (const Kill& k : kills) {
    if (!k.during_run) continue;
    ++during_run;
    ++per_service[k.service];
  }
  std::printf("%d kills of one service while the run was going, and of all at the start of: %s; %.0f s\n", during_run,
              absl::StrJoin(full_restarts, ", ").c_str(), seconds);
  ASSERT_EQ(follower.last_state(), v1::RUN_STATE_SUCCEEDED) << follower.last_message();
  EXPECT_GE(during_run, 20);
  for (const std::string& service : kServices) EXPECT_GE(per_service[service], kPhases - 1) << service;

  auto got = Collect(s.run_dir());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->table, expected.table) << "the final table differs from the uninterrupted run's";
  EXPECT_EQ(got->lines, expected.lines) << "metrics.jsonl has other lines than the uninterrupted run's";
  for (const auto& [key, count] : got->lines) {
    if (std::get<0>(key) == "ppo") {
      EXPECT_EQ(count, 1) << "ppo step " << std::get<2>(key);
    }
  }
  for (const auto& [key, value] : expected.values) {
    auto it = got->values.find(key);
    ASSERT_NE(it, got->values.end()) << key;
    EXPECT_EQ(it->second, value) << key;
  }
  EXPECT_THAT(got->temp_files, ::testing::IsEmpty());
}

}  // namespace
}  // namespace rlhf
