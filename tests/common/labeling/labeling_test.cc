#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/labeling/judge_labeler.h"
#include "common/labeling/labeler.h"
#include "common/runtime/finished_reactors.h"
#include "common/runtime/server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rlhf/v1/reward.grpc.pb.h"

namespace rlhf::labeling {
namespace {

using ::testing::HasSubstr;

TEST(PreferencesFromRanks, GivesEveryStrictPairAndNoTies) {
  const std::vector<Preference> p = PreferencesFromRanks({2, 1, 2, 3});
  std::vector<std::pair<int32_t, int32_t>> got;
  for (const Preference& x : p) got.push_back({x.preferred, x.other});
  EXPECT_EQ(got, (std::vector<std::pair<int32_t, int32_t>>{{1, 0}, {0, 3}, {1, 2}, {1, 3}, {2, 3}}));
}

// A judge whose score is the length of the response text.
class LengthJudge final : public v1::RewardScoringService::CallbackService {
 public:
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context, const v1::ScoreRequest* request,
                                  v1::ScoreResponse* response) override {
    for (const v1::ScoreItem& item : request->items()) {
      response->add_scores(static_cast<float>(item.response().text().size()));
    }
    response->mutable_model_id()->set_name("length");
    response->mutable_model_id()->set_version(3);
    ++calls;
    return runtime::FinishUnary(context, grpc::Status::OK);
  }
  int calls = 0;
};

class JudgeLabelerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime::ServerOptions options;
    options.name = "judge-test";
    options.listen_address = "127.0.0.1:0";
    options.metrics_address = "127.0.0.1:0";
    auto server = runtime::Server::Start(options, {{"rlhf.v1.RewardScoringService", &judge_}},
                                         std::make_shared<prometheus::Registry>());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  void TearDown() override { server_->Shutdown(); }

  std::unique_ptr<JudgeLabeler> Make(double noise) {
    JudgeLabelerOptions o;
    o.client.target = absl::StrCat("127.0.0.1:", server_->port());
    o.noise_rate = noise;
    o.seed = 5;
    o.max_items_per_call = 7;  // several calls, split inside tasks
    auto labeler = JudgeLabeler::Create(o);
    EXPECT_TRUE(labeler.ok()) << labeler.status();
    return std::move(*labeler);
  }

  static std::vector<RankingTask> Tasks(int n) {
    std::vector<RankingTask> tasks;
    for (int i = 0; i < n; ++i) tasks.push_back({absl::StrCat("p", i), {"aa", "a", "aaaa", "aa"}});
    return tasks;
  }

  LengthJudge judge_;
  std::unique_ptr<runtime::Server> server_;
};

TEST_F(JudgeLabelerTest, PrefersTheHigherScoreAndTiesGiveNoPair) {
  auto labeler = Make(0.0);
  int64_t last_progress = 0;
  LabelingOptions options;
  options.progress = [&](int64_t done, int64_t total) {
    EXPECT_EQ(total, 3);
    last_progress = done;
  };
  auto judgements = labeler->Judge(Tasks(3), options);
  ASSERT_TRUE(judgements.ok()) << judgements.status();
  ASSERT_EQ(judgements->size(), 3u);
  EXPECT_EQ(last_progress, 3);
  EXPECT_EQ(judge_.calls, 2) << "12 items in calls of at most 7";
  for (const auto& j : *judgements) {
    ASSERT_TRUE(j.has_value());
    EXPECT_EQ(j->ranks, (std::vector<int32_t>{2, 4, 1, 2}));
    EXPECT_EQ(j->preferences.size(), 5u) << "6 pairs, one tie";
    for (const Preference& p : j->preferences) EXPECT_NE(p.preferred, p.other);
    EXPECT_EQ(j->labeler_id, "judge:length v3");
  }
  EXPECT_THAT(labeler->Describe(), HasSubstr("length v3"));
}

TEST_F(JudgeLabelerTest, NoiseFlipsAboutThatShareOfPairsAndIsRepeatable) {
  auto labeler = Make(0.25);
  auto a = labeler->Judge(Tasks(400), {});
  auto b = labeler->Judge(Tasks(400), {});
  ASSERT_TRUE(a.ok() && b.ok());
  int flipped = 0, pairs = 0;
  const std::vector<int> length = {2, 1, 4, 2};
  for (size_t i = 0; i < a->size(); ++i) {
    ASSERT_EQ((*a)[i]->preferences.size(), (*b)[i]->preferences.size());
    for (size_t k = 0; k < (*a)[i]->preferences.size(); ++k) {
      const Preference& p = (*a)[i]->preferences[k];
      EXPECT_EQ(p.preferred, (*b)[i]->preferences[k].preferred) << "same seed, same judgement";
      flipped += length[p.preferred] < length[p.other];
      ++pairs;
    }
    EXPECT_TRUE((*a)[i]->ranks.empty()) << "flipped pairs need not fit a ranking";
  }
  EXPECT_EQ(pairs, 2000);
  EXPECT_NEAR(static_cast<double>(flipped) / pairs, 0.25, 0.04);
}

TEST_F(JudgeLabelerTest, ErrorsNameTheTaskOrTheJudge) {
  auto labeler = Make(0.0);
  auto bad = labeler->Judge({{"p", {"only one"}}}, {});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("tasks[0]"));
  JudgeLabelerOptions o;
  o.client.target = "127.0.0.1:1";
  o.call_timeout = absl::Seconds(2);
  auto dead = JudgeLabeler::Create(o);
  ASSERT_TRUE(dead.ok());
  auto result = (*dead)->Judge(Tasks(1), {});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("127.0.0.1:1"));
  o.noise_rate = 0.7;
  EXPECT_THAT(std::string(JudgeLabeler::Create(o).status().message()), HasSubstr("labeler.judge.noise_rate"));
}

}  // namespace
}  // namespace rlhf::labeling
