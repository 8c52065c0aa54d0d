#include "common/task/win_rate.h"

#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rlhf::task {
namespace {

WinRateOptions Options(double confidence_level, IntervalMethod method = IntervalMethod::kNormal) {
  WinRateOptions options;
  options.confidence_level = confidence_level;
  options.method = method;
  return options;
}

using ::testing::HasSubstr;

TEST(NormalQuantile, MatchesTabulatedValues) {
  EXPECT_NEAR(NormalQuantile(0.975), 1.959963984540054, 1e-12);
  EXPECT_NEAR(NormalQuantile(0.95), 1.644853626951472, 1e-12);
  EXPECT_NEAR(NormalQuantile(0.5), 0.0, 1e-12);
  EXPECT_NEAR(NormalQuantile(0.025), -1.959963984540054, 1e-12);
  EXPECT_NEAR(NormalQuantile(0.995), 2.575829303548901, 1e-12);
  EXPECT_TRUE(std::isnan(NormalQuantile(0.0)));
  EXPECT_TRUE(std::isnan(NormalQuantile(1.0)));
}

TEST(ComputeWinRate, CountsTiesAsHalfWithANormalInterval) {
  // Outcomes: win, tie, loss, win -> 0.625. Squared deviations sum to 2 * 0.375^2 + 0.125^2 + 0.625^2 = 0.6875;
  // s^2 = 0.6875 / 3; se = sqrt(s^2 / 4) = 0.2393568.
  const std::vector<double> a = {1, 0, 0, 2};
  const std::vector<double> b = {0, 0, 1, 1};
  absl::StatusOr<WinRate> w = ComputeWinRate(a, b);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->num_prompts, 4);
  EXPECT_EQ(w->wins, 2);
  EXPECT_EQ(w->ties, 1);
  EXPECT_EQ(w->losses, 1);
  EXPECT_DOUBLE_EQ(w->win_rate, 0.625);
  EXPECT_NEAR(w->standard_error, 0.2393568, 1e-7);
  EXPECT_NEAR(w->ci_low, 0.625 - 1.959964 * 0.2393568, 1e-6);
  EXPECT_DOUBLE_EQ(w->ci_high, 1.0);  // 1.094 clipped
  EXPECT_DOUBLE_EQ(w->confidence_level, 0.95);
}

TEST(ComputeWinRate, NarrowsWithMorePromptsAndWidensWithConfidence) {
  // 60 wins, 20 ties, 20 losses of 100: p = 0.7; deviations 60 * 0.09 + 20 * 0.04 + 20 * 0.49 = 16;
  // se = sqrt(16 / 99 / 100) = 0.0402015.
  std::vector<double> a(100, 0.0);
  std::vector<double> b(100, 0.0);
  for (int i = 0; i < 60; ++i) a[i] = 1;
  for (int i = 80; i < 100; ++i) b[i] = 1;
  absl::StatusOr<WinRate> w = ComputeWinRate(a, b);
  ASSERT_TRUE(w.ok());
  EXPECT_DOUBLE_EQ(w->win_rate, 0.7);
  EXPECT_NEAR(w->standard_error, 0.0402015, 1e-7);
  EXPECT_NEAR(w->ci_low, 0.7 - 1.959964 * 0.0402015, 1e-6);
  EXPECT_NEAR(w->ci_high, 0.7 + 1.959964 * 0.0402015, 1e-6);
  absl::StatusOr<WinRate> w99 = ComputeWinRate(a, b, Options(0.99));
  EXPECT_NEAR(w99->ci_low, 0.7 - 2.575829 * 0.0402015, 1e-6);
}

TEST(ComputeWinRate, WilsonIntervalOnHandValues) {
  // 7 wins of 10: the textbook Wilson 95% interval is [0.3968, 0.8922].
  const std::vector<double> a = {1, 1, 1, 1, 1, 1, 1, 0, 0, 0};
  const std::vector<double> b = {0, 0, 0, 0, 0, 0, 0, 1, 1, 1};
  absl::StatusOr<WinRate> w = ComputeWinRate(a, b, Options(0.95, IntervalMethod::kWilson));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_DOUBLE_EQ(w->win_rate, 0.7);
  EXPECT_NEAR(w->ci_low, 0.396778, 1e-6);
  EXPECT_NEAR(w->ci_high, 0.892209, 1e-6);
  // A single prompt is allowed with Wilson: one win of one.
  absl::StatusOr<WinRate> one = ComputeWinRate({1.0}, {0.0}, Options(0.95, IntervalMethod::kWilson));
  ASSERT_TRUE(one.ok());
  EXPECT_NEAR(one->ci_low, 0.206549, 1e-6);
  EXPECT_DOUBLE_EQ(one->ci_high, 1.0);
}

TEST(ComputeWinRate, AllTiesGiveOneHalf) {
  absl::StatusOr<WinRate> w = ComputeWinRate({0, -1, -2}, {0, -1, -2});
  ASSERT_TRUE(w.ok());
  EXPECT_DOUBLE_EQ(w->win_rate, 0.5);
  EXPECT_EQ(w->ties, 3);
  EXPECT_DOUBLE_EQ(w->ci_low, 0.5);
  EXPECT_DOUBLE_EQ(w->ci_high, 0.5);
}

TEST(ComputeWinRate, RejectsBadInputNamingIt) {
  EXPECT_EQ(ComputeWinRate({1, 2}, {1}).status().message(),
            "scores_a has 2 values but scores_b has 1; they must score the same prompts");
  EXPECT_EQ(ComputeWinRate({}, {}).status().message(), "no scores: need at least one prompt");
  EXPECT_EQ(ComputeWinRate({1, NAN}, {1, 2}).status().message(), "scores_a[1] is NaN");
  EXPECT_EQ(ComputeWinRate({1, 2}, {NAN, 2}).status().message(), "scores_b[0] is NaN");
  EXPECT_EQ(ComputeWinRate({1, 2}, {1, 2}, Options(1.0)).status().message(), "confidence_level=1 is outside (0, 1)");
  const absl::Status status = ComputeWinRate({1}, {0}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("needs at least 2 prompts"));
}

TEST(SummarizeScores, GivesTheMeanAndThePerfectFraction) {
  absl::StatusOr<ScoreSummary> s = SummarizeScores({0, -1, 0, -3});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->count, 4);
  EXPECT_DOUBLE_EQ(s->mean_score, -1.0);
  EXPECT_DOUBLE_EQ(s->perfect_fraction, 0.5);
  EXPECT_DOUBLE_EQ(SummarizeScores({0.5, 1, 2}, 1.0)->perfect_fraction, 2.0 / 3.0);
  EXPECT_EQ(SummarizeScores({}).status().message(), "no scores to summarise");
  EXPECT_EQ(SummarizeScores({0, NAN}).status().message(), "scores[1] is NaN");
}

}  // namespace
}  // namespace rlhf::task
