#include "common/task/simulated_labeler.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/task/builtin_task.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rlhf::labeling {
// For gMock's ElementsAre (found by argument-dependent lookup).
bool operator==(const Preference& a, const Preference& b) { return a.preferred == b.preferred && a.other == b.other; }
}  // namespace rlhf::labeling

namespace rlhf::task {
namespace {

using labeling::Judgement;
using labeling::LabelingOptions;
using labeling::Preference;
using labeling::RankingTask;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::unique_ptr<SimulatedLabeler> Labeler(double noise, uint64_t seed = 0,
                                          ResponseForm form = ResponseForm::kFinishedText) {
  SimulatedLabelerOptions options;
  options.noise_rate = noise;
  options.seed = seed;
  options.response_form = form;
  absl::StatusOr<std::unique_ptr<SimulatedLabeler>> labeler = SimulatedLabeler::Create(options);
  EXPECT_TRUE(labeler.ok()) << labeler.status();
  return *std::move(labeler);
}

// K = 4 responses per prompt of varied quality: demonstrations of the task, perfect or corrupted.
std::vector<RankingTask> VariedTasks(int num_tasks) {
  BuiltinTaskOptions options;
  options.seed = 77;
  options.num_demonstrations = num_tasks * 4;
  options.num_eval_prompts = 1;
  options.corruption_rate = 0.6;
  const BuiltinTask task = *GenerateBuiltinTask(options);
  std::vector<RankingTask> tasks;
  for (int t = 0; t < num_tasks; ++t) {
    RankingTask ranking;
    ranking.prompt = task.demonstrations[static_cast<size_t>(4 * t)].prompt;
    // The responses of other prompts are mostly wrong answers to this one: a mix of scores.
    for (int k = 0; k < 4; ++k)
      ranking.responses.push_back(task.demonstrations[static_cast<size_t>(4 * t + k)].response);
    tasks.push_back(std::move(ranking));
  }
  return tasks;
}

TEST(SimulatedLabeler, WithoutNoiseRanksByTheTrueScore) {
  const std::vector<RankingTask> tasks = {
      {"repeat red egg cat :", {"red egg", "red egg cat", "cat", "red egg cat cat"}},
      {"list 2 food :", {"tea egg", "egg tea", "red"}},
  };
  absl::StatusOr<std::vector<std::optional<Judgement>>> judged = Labeler(0.0)->Judge(tasks, LabelingOptions{});
  ASSERT_TRUE(judged.ok()) << judged.status();
  ASSERT_EQ(judged->size(), 2u);
  const Judgement& first = *(*judged)[0];
  // Scores -1, 0, -2, -1.
  EXPECT_THAT(first.ranks, ElementsAre(2, 1, 4, 2));
  EXPECT_EQ(first.labeler_id, "simulated");
  EXPECT_THAT(first.preferences,
              ElementsAre(Preference{1, 0}, Preference{0, 2}, Preference{1, 2}, Preference{1, 3}, Preference{3, 2}));
  EXPECT_EQ(first.preferences, labeling::PreferencesFromRanks(first.ranks));
  const Judgement& second = *(*judged)[1];
  EXPECT_THAT(second.ranks, ElementsAre(1, 1, 3));  // two right answers tie
  EXPECT_THAT(second.preferences, ElementsAre(Preference{0, 2}, Preference{1, 2}));
}

TEST(SimulatedLabeler, AgreesWithTheNoiselessLabelerAboutOneMinusTheNoise) {
  const std::vector<RankingTask> tasks = VariedTasks(2500);
  const std::vector<std::optional<Judgement>> truth = *Labeler(0.0)->Judge(tasks, LabelingOptions{});
  for (const double noise : {0.1, 0.25}) {
    const std::vector<std::optional<Judgement>> noisy = *Labeler(noise, 3)->Judge(tasks, LabelingOptions{});
    int64_t pairs = 0;
    int64_t agree = 0;
    for (size_t t = 0; t < tasks.size(); ++t) {
      ASSERT_EQ(noisy[t]->preferences.size(), truth[t]->preferences.size());
      EXPECT_TRUE(noisy[t]->ranks.empty());
      for (size_t p = 0; p < truth[t]->preferences.size(); ++p) {
        ++pairs;
        agree += noisy[t]->preferences[p] == truth[t]->preferences[p];
      }
    }
    ASSERT_GT(pairs, 8000);
    // The standard deviation of the agreement is below 0.005 with this many pairs.
    EXPECT_NEAR(static_cast<double>(agree) / static_cast<double>(pairs), 1.0 - noise, 0.02) << noise;
  }
}

TEST(SimulatedLabeler, IsDeterministicForASeedAndRound) {
  const std::vector<RankingTask> tasks = VariedTasks(300);
  const auto preferences = [&](uint64_t seed, int32_t round) {
    LabelingOptions options;
    options.round = round;
    std::vector<std::vector<std::pair<int32_t, int32_t>>> out;
    const std::vector<std::optional<Judgement>> judged = *Labeler(0.25, seed)->Judge(tasks, options);
    for (const std::optional<Judgement>& j : judged) {
      out.emplace_back();
      for (const Preference& p : j->preferences) out.back().emplace_back(p.preferred, p.other);
    }
    return out;
  };
  EXPECT_EQ(preferences(1, 0), preferences(1, 0));
  EXPECT_NE(preferences(1, 0), preferences(2, 0));
  EXPECT_NE(preferences(1, 0), preferences(1, 1));
}

TEST(SimulatedLabeler, GeneratedResponsesWithoutEosLoseThePenalty) {
  const std::vector<RankingTask> tasks = {{"reverse cat dog :", {"dog cat", "dog cat <eos>", "cat <eos>"}}};
  const std::vector<std::optional<Judgement>> judged =
      *Labeler(0.0, 0, ResponseForm::kGeneratedText)->Judge(tasks, LabelingOptions{});
  // Scores -2 (unfinished), 0, -1.
  EXPECT_THAT(judged[0]->ranks, ElementsAre(3, 1, 2));
}

TEST(SimulatedLabeler, ReportsProgressAndStopsWhenCancelled) {
  const std::vector<RankingTask> tasks = VariedTasks(5);
  LabelingOptions options;
  std::vector<std::pair<int64_t, int64_t>> progress;
  options.progress = [&](int64_t done, int64_t total) { progress.emplace_back(done, total); };
  ASSERT_TRUE(Labeler(0.25)->Judge(tasks, options).ok());
  EXPECT_EQ(progress.size(), 5u);
  EXPECT_EQ(progress.back(), std::make_pair(int64_t{5}, int64_t{5}));

  int polls = 0;
  options.cancelled = [&] { return ++polls > 2; };
  const absl::Status status = Labeler(0.25)->Judge(tasks, options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(status.message(), "labeling cancelled after 2 of 5 tasks");
}

TEST(SimulatedLabeler, RejectsBadTasksNamingThem) {
  const std::unique_ptr<SimulatedLabeler> labeler = Labeler(0.25);
  absl::Status status =
      labeler->Judge({{"repeat red egg :", {"a", "b"}}, {"repeat red egg :", {"a"}}}, LabelingOptions{}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "tasks[1] has 1 response(s); a ranking needs at least 2");
  status = labeler->Judge({{"translate red :", {"a", "b"}}}, LabelingOptions{}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("tasks[0].prompt: prompt \"translate red :\" is not"));
}

TEST(SimulatedLabeler, CreateValidatesItsOptions) {
  SimulatedLabelerOptions options;
  options.noise_rate = 0.7;
  absl::Status status = SimulatedLabeler::Create(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("noise_rate=0.7 is outside [0, 0.5]"));
  options.noise_rate = 0.25;
  options.labeler_id = "";
  EXPECT_EQ(SimulatedLabeler::Create(options).status().message(), "labeler_id is empty");
  options.labeler_id = "sim";
  options.seed = 4;
  EXPECT_EQ((*SimulatedLabeler::Create(options))->Describe(), "simulated(noise=0.25, seed=4)");
}

TEST(RanksFromScores, GivesTiesTheRankOfTheFirst) {
  EXPECT_THAT(RanksFromScores({0, -1, 0, -3}), ElementsAre(1, 3, 1, 4));
  EXPECT_THAT(RanksFromScores({-2, -2}), ElementsAre(1, 1));
}

}  // namespace
}  // namespace rlhf::task
