// Tests of common/rl: every formula against values computed by hand (the arithmetic is in the comments).
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "common/rl/kl.h"
#include "common/rl/lm_losses.h"
#include "common/rl/ppo_math.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rlhf::rl {
namespace {

using ::testing::HasSubstr;

constexpr double kNan = std::numeric_limits<double>::quiet_NaN();
constexpr double kTol = 1e-9;

// A [rows, cols] tensor from nested lists.
at::Tensor Mat(const std::vector<std::vector<double>>& rows, at::ScalarType dtype = at::kDouble) {
  std::vector<double> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t m = n == 0 ? 0 : static_cast<int64_t>(rows[0].size());
  return at::tensor(flat, at::kDouble).view({n, m}).to(dtype);
}

at::Tensor Vec(const std::vector<double>& v, at::ScalarType dtype = at::kDouble) {
  return at::tensor(v, at::kDouble).to(dtype);
}

at::Tensor Mask(const std::vector<std::vector<double>>& rows) { return Mat(rows).to(at::kBool); }

double At(const at::Tensor& t, int64_t i, int64_t j) { return t[i][j].item<double>(); }

void ExpectMat(const at::Tensor& actual, const std::vector<std::vector<double>>& expected, double tol = kTol) {
  ASSERT_EQ(actual.dim(), 2);
  ASSERT_EQ(actual.size(0), static_cast<int64_t>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_EQ(actual.size(1), static_cast<int64_t>(expected[i].size()));
    for (size_t j = 0; j < expected[i].size(); ++j) {
      EXPECT_NEAR(At(actual, i, j), expected[i][j], tol) << "at [" << i << ", " << j << "]";
    }
  }
}

void ExpectInvalidArgument(const absl::Status& status, const std::string& substring) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(substring));
}

// ----------------------------------------------------------------------------------------------------------------
// KL estimators

TEST(KlEstimator, NamesRoundTrip) {
  for (KlEstimator e : {KlEstimator::kK1, KlEstimator::kK2, KlEstimator::kK3}) {
    auto parsed = ParseKlEstimator(KlEstimatorName(e));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, e);
  }
  EXPECT_EQ(KlEstimatorName(KlEstimator::kK3), "k3");
  ExpectInvalidArgument(ParseKlEstimator("k4").status(), "k4");
}

TEST(KlPerToken, MatchesHandValuesForEachEstimator) {
  // logp = [-1, -2], ref = [-1.5, -1]; log_ratio = ref - logp = [-0.5, 1].
  //   k1 = logp - ref              = [0.5, -1]
  //   k2 = 0.5 * log_ratio^2       = [0.125, 0.5]
  //   k3 = (e^lr - 1) - lr         = [e^-0.5 - 0.5, e - 2] = [0.1065306597126334, 0.7182818284590451]
  // The third position is padding holding NaN: 0 out, never read.
  const at::Tensor logp = Mat({{-1.0, -2.0, kNan}});
  const at::Tensor ref = Mat({{-1.5, -1.0, kNan}});
  const at::Tensor mask = Mask({{1, 1, 0}});
  auto k1 = KlPerToken(logp, ref, mask, KlEstimator::kK1);
  auto k2 = KlPerToken(logp, ref, mask, KlEstimator::kK2);
  auto k3 = KlPerToken(logp, ref, mask, KlEstimator::kK3);
  ASSERT_TRUE(k1.ok()) << k1.status();
  ASSERT_TRUE(k2.ok()) << k2.status();
  ASSERT_TRUE(k3.ok()) << k3.status();
  ExpectMat(*k1, {{0.5, -1.0, 0.0}});
  ExpectMat(*k2, {{0.125, 0.5, 0.0}});
  ExpectMat(*k3, {{0.1065306597126334, 0.7182818284590451, 0.0}});
}

TEST(KlPerToken, GivesZeroGradientAtPadding) {
  const at::Tensor logp = Mat({{-1.0, kNan}}).requires_grad_();
  const at::Tensor ref = Mat({{-1.5, kNan}});
  auto k3 = KlPerToken(logp, ref, Mask({{1, 0}}), KlEstimator::kK3);
  ASSERT_TRUE(k3.ok()) << k3.status();
  k3->sum().backward();
  // d k3 / d logp = d/dlogp [(e^(ref-logp) - 1) - (ref - logp)] = 1 - e^(ref-logp) = 1 - e^-0.5 = 0.3934693402873666
  ExpectMat(logp.grad(), {{0.3934693402873666, 0.0}});
}

TEST(KlPerToken, RejectsMismatchedShapesNamingTheArgument) {
  ExpectInvalidArgument(
      KlPerToken(Mat({{0, 0, 0}}), Mat({{0, 0}}), Mask({{1, 1, 1}}), KlEstimator::kK1).status(), "ref_logprobs");
  ExpectInvalidArgument(
      KlPerToken(Mat({{0, 0}}), Mat({{0, 0}}), Mat({{1, 0.5}}), KlEstimator::kK1).status(), "mask");
  ExpectInvalidArgument(
      KlPerToken(Vec({0, 0}), Vec({0, 0}), Vec({1, 1}), KlEstimator::kK1).status(), "logprobs must be [batch, seq]");
}

// ----------------------------------------------------------------------------------------------------------------
// Per-token rewards

TEST(PerTokenRewards, PutsScoreOnLastValidTokenOnly) {
  // beta = 0.1, k1. Row 0 has 3 valid tokens, row 1 has 2; padding holds junk.
  //   row 0: kl = logp - ref = [-1 - -1.5, -2 - -1, -0.5 - -0.5] = [0.5, -1, 0]
  //          rewards = -0.1 * kl + score on t=2 = [-0.05, 0.1, 0 + 2.0, 0]; kl_sum = -0.5
  //   row 1: kl = [-0.2 - -0.4, -0.3 - -0.1] = [0.2, -0.2]
  //          rewards = [-0.02, 0.02 + (-1.0), 0, 0]; kl_sum = 0
  const at::Tensor logp = Mat({{-1.0, -2.0, -0.5, 7.0}, {-0.2, -0.3, kNan, kNan}});
  const at::Tensor ref = Mat({{-1.5, -1.0, -0.5, -9.0}, {-0.4, -0.1, kNan, 3.0}});
  const at::Tensor scores = Vec({2.0, -1.0});
  const at::Tensor mask = Mat({{1, 1, 1, 0}, {1, 1, 0, 0}});  // float mask
  PerTokenRewardsOptions options;
  options.kl_beta = 0.1;
  auto out = PerTokenRewards(logp, ref, scores, mask, at::Tensor(), options);
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectMat(out->rewards, {{-0.05, 0.1, 2.0, 0.0}, {-0.02, 0.02 - 1.0, 0.0, 0.0}});
  ExpectMat(out->kl, {{0.5, -1.0, 0.0, 0.0}, {0.2, -0.2, 0.0, 0.0}});
  EXPECT_NEAR(out->kl_sum[0].item<double>(), -0.5, kTol);
  EXPECT_NEAR(out->kl_sum[1].item<double>(), 0.0, kTol);
  EXPECT_EQ(out->last_index[0].item<int64_t>(), 2);
  EXPECT_EQ(out->last_index[1].item<int64_t>(), 1);
  EXPECT_FALSE(out->rewards.requires_grad());
}

TEST(PerTokenRewards, AddsMissingStopPenaltyOnlyToRowsWithoutStop) {
  // beta = 0: rewards are the scores alone. Row 1 never emitted the stop token: -1.0 + (-1) = -2.0.
  // Row 0 is left-padded: its last valid token is t=2 all the same.
  const at::Tensor logp = Mat({{0.0, -1.0, -1.0}, {-1.0, -1.0, 0.0}});
  const at::Tensor ref = Mat({{0.0, -2.0, -2.0}, {-2.0, -2.0, 0.0}});
  PerTokenRewardsOptions options;
  options.kl_beta = 0.0;
  options.missing_stop_penalty = -1.0;
  const at::Tensor emitted_stop = at::tensor({1, 0}, at::kInt).to(at::kBool);
  auto out = PerTokenRewards(logp, ref, Vec({0.5, -1.0}), Mask({{0, 1, 1}, {1, 1, 0}}), emitted_stop, options);
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectMat(out->rewards, {{0.0, 0.0, 0.5}, {0.0, -2.0, 0.0}});
  EXPECT_NEAR(out->scores[1].item<double>(), -2.0, kTol);
}

TEST(PerTokenRewards, RejectsBadArgumentsNamingThem) {
  const at::Tensor lp = Mat({{0.0, 0.0}, {0.0, 0.0}});
  const at::Tensor mask = Mask({{1, 1}, {1, 0}});
  const PerTokenRewardsOptions options;
  ExpectInvalidArgument(PerTokenRewards(lp, lp, Vec({1, 2, 3}), mask, at::Tensor(), options).status(), "scores");
  ExpectInvalidArgument(
      PerTokenRewards(lp, lp, Vec({1, 2}), mask, Vec({1, 0}), options).status(), "emitted_stop must be bool");
  ExpectInvalidArgument(
      PerTokenRewards(lp, lp, Vec({1, 2}), Mask({{1, 1}, {0, 0}}), at::Tensor(), options).status(), "mask row 1");
  PerTokenRewardsOptions negative = options;
  negative.kl_beta = -0.1;
  ExpectInvalidArgument(PerTokenRewards(lp, lp, Vec({1, 2}), mask, at::Tensor(), negative).status(), "kl_beta");
  // The status names the function too.
  EXPECT_THAT(std::string(PerTokenRewards(lp, lp, Vec({1}), mask, at::Tensor(), options).status().message()),
              HasSubstr("PerTokenRewards: scores"));
}

// ----------------------------------------------------------------------------------------------------------------
// GAE

// r = [0.1, -0.2, 0.0, 1.0], V = [0.5, 0.4, 0.6, 0.8], V_4 = 0 (the episode ends).
const std::vector<double> kRewards = {0.1, -0.2, 0.0, 1.0};
const std::vector<double> kValues = {0.5, 0.4, 0.6, 0.8};

TEST(ComputeGae, MatchesHandComputedFourStepExample) {
  // gamma = 1, lambda = 0.95 (gamma * lambda = 0.95):
  //   t=3: delta = 1.0 + 0   - 0.8 = 0.2    A3 = 0.2
  //   t=2: delta = 0.0 + 0.8 - 0.6 = 0.2    A2 = 0.2 + 0.95 * 0.2    = 0.39
  //   t=1: delta = -0.2 + 0.6 - 0.4 = 0.0   A1 = 0.0 + 0.95 * 0.39   = 0.3705
  //   t=0: delta = 0.1 + 0.4 - 0.5 = 0.0    A0 = 0.0 + 0.95 * 0.3705 = 0.351975
  //   returns = A + V = [0.851975, 0.7705, 0.99, 1.0]
  auto out = ComputeGae(Mat({kRewards}), Mat({kValues}), Mask({{1, 1, 1, 1}}), GaeOptions{1.0, 0.95});
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectMat(out->advantages, {{0.351975, 0.3705, 0.39, 0.2}});
  ExpectMat(out->returns, {{0.851975, 0.7705, 0.99, 1.0}});
}

TEST(ComputeGae, MatchesHandComputedFourStepExampleWithDiscount) {
  // gamma = 0.9, lambda = 0.5 (gamma * lambda = 0.45):
  //   t=3: delta = 1.0 + 0.9*0   - 0.8 = 0.2     A3 = 0.2
  //   t=2: delta = 0.0 + 0.9*0.8 - 0.6 = 0.12    A2 = 0.12  + 0.45 * 0.2    = 0.21
  //   t=1: delta = -0.2 + 0.9*0.6 - 0.4 = -0.06  A1 = -0.06 + 0.45 * 0.21   = 0.0345
  //   t=0: delta = 0.1 + 0.9*0.4 - 0.5 = -0.04   A0 = -0.04 + 0.45 * 0.0345 = -0.024475
  //   returns = [0.475525, 0.4345, 0.81, 1.0]
  auto out = ComputeGae(Mat({kRewards}), Mat({kValues}), Mask({{1, 1, 1, 1}}), GaeOptions{0.9, 0.5});
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectMat(out->advantages, {{-0.024475, 0.0345, 0.21, 0.2}});
  ExpectMat(out->returns, {{0.475525, 0.4345, 0.81, 1.0}});
}

TEST(ComputeGae, ShorterMaskedRowBootstrapsZeroAndIgnoresPadding) {
  // Row 1 has 2 valid tokens; its padding holds junk (7, NaN, 9) that must not leak.
  //   gamma = 1, lambda = 0.95: t=1: delta = 1.0 + 0 - 0.3 = 0.7, A1 = 0.7
  //                             t=0: delta = 0.5 + 0.3 - 0.2 = 0.6, A0 = 0.6 + 0.95 * 0.7 = 1.265
  //   returns = [1.465, 1.0, 0, 0]
  const at::Tensor rewards = Mat({kRewards, {0.5, 1.0, 7.0, 7.0}});
  const at::Tensor values = Mat({kValues, {0.2, 0.3, kNan, 9.0}});
  auto out = ComputeGae(rewards, values, Mask({{1, 1, 1, 1}, {1, 1, 0, 0}}), GaeOptions{1.0, 0.95});
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectMat(out->advantages, {{0.351975, 0.3705, 0.39, 0.2}, {1.265, 0.7, 0.0, 0.0}});
  ExpectMat(out->returns, {{0.851975, 0.7705, 0.99, 1.0}, {1.465, 1.0, 0.0, 0.0}});
}

TEST(ComputeGae, LeftPaddingGivesTheSameAdvantagesShifted) {
  auto out = ComputeGae(Mat({{kNan, 0.5, 1.0}}, at::kFloat), Mat({{kNan, 0.2, 0.3}}, at::kFloat),
                        Mask({{0, 1, 1}}), GaeOptions{1.0, 0.95});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->advantages.scalar_type(), at::kFloat);
  ExpectMat(out->advantages, {{0.0, 1.265, 0.7}}, 1e-6);
}

TEST(ComputeGae, RejectsBadArgumentsNamingThem) {
  const at::Tensor r = Mat({{0, 0, 0, 0}, {0, 0, 0, 0}});
  const at::Tensor mask = Mask({{1, 1, 1, 1}, {1, 1, 0, 0}});
  const at::Tensor short_values = Mat({{0, 0, 0}, {0, 0, 0}});
  absl::Status s = ComputeGae(r, short_values, mask, GaeOptions{}).status();
  ExpectInvalidArgument(s, "values has shape [2, 3] but must be [2, 4]");
  ExpectInvalidArgument(ComputeGae(r, r, Mask({{1, 1, 1, 1}}), GaeOptions{}).status(), "mask has shape [1, 4]");
  ExpectInvalidArgument(ComputeGae(r, r, mask, GaeOptions{1.5, 0.95}).status(), "gamma");
  ExpectInvalidArgument(ComputeGae(r, r, mask, GaeOptions{1.0, -0.1}).status(), "lambda");
  ExpectInvalidArgument(ComputeGae(r.to(at::kLong), r, mask, GaeOptions{}).status(), "rewards must be a floating");
}

// ----------------------------------------------------------------------------------------------------------------
// Masked statistics and whitening

// Valid entries 1, 2, 3, 4, 5: mean 3, squared deviations 4 + 1 + 0 + 1 + 4 = 10, unbiased var 10 / 4 = 2.5,
// biased var 10 / 5 = 2. Padded entries 100 and -7 must be ignored.
at::Tensor StatsX() { return Mat({{1, 2, 3, 100}, {4, 5, -7, kNan}}); }
at::Tensor StatsMask() { return Mask({{1, 1, 1, 0}, {1, 1, 0, 0}}); }

TEST(MaskedStats, MatchHandValues) {
  auto mean = MaskedMean(StatsX(), StatsMask());
  auto var = MaskedVar(StatsX(), StatsMask());
  auto biased = MaskedVar(StatsX(), StatsMask(), /*unbiased=*/false);
  ASSERT_TRUE(mean.ok() && var.ok() && biased.ok());
  EXPECT_NEAR(mean->item<double>(), 3.0, kTol);
  EXPECT_NEAR(var->item<double>(), 2.5, kTol);
  EXPECT_NEAR(biased->item<double>(), 2.0, kTol);
  ExpectInvalidArgument(MaskedMean(StatsX(), Mask({{0, 0, 0, 0}, {0, 0, 0, 0}})).status(), "mask has 0 valid");
  ExpectInvalidArgument(MaskedVar(StatsX(), Mask({{1, 0, 0, 0}, {0, 0, 0, 0}})).status(), "mask has 1 valid");
}

TEST(Whiten, GivesMeanZeroVarOneOverValidEntriesAndLeavesPaddingAlone) {
  // (x - 3) / sqrt(2.5 + 1e-8): [-1.2649110615, -0.6324555308, 0, 0.6324555308, 1.2649110615].
  auto w = Whiten(StatsX(), StatsMask());
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_NEAR(At(*w, 0, 0), -1.2649110615375296, 1e-8);
  EXPECT_NEAR(At(*w, 0, 1), -0.6324555307687648, 1e-8);
  EXPECT_NEAR(At(*w, 0, 2), 0.0, 1e-8);
  EXPECT_NEAR(At(*w, 1, 0), 0.6324555307687648, 1e-8);
  EXPECT_NEAR(At(*w, 1, 1), 1.2649110615375296, 1e-8);
  EXPECT_EQ(At(*w, 0, 3), 100.0);
  EXPECT_EQ(At(*w, 1, 2), -7.0);
  EXPECT_TRUE(std::isnan(At(*w, 1, 3)));
  auto mean = MaskedMean(*w, StatsMask());
  auto var = MaskedVar(*w, StatsMask());
  ASSERT_TRUE(mean.ok() && var.ok());
  EXPECT_NEAR(mean->item<double>(), 0.0, 1e-8);
  EXPECT_NEAR(var->item<double>(), 1.0, 1e-8);
}

TEST(Whiten, WithoutShiftKeepsTheMean) {
  auto w = Whiten(StatsX().to(at::kFloat), StatsMask(), /*shift_mean=*/false);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->scalar_type(), at::kFloat);
  // 3 + (x - 3) / sqrt(2.5): x = 1 -> 1.7350889, x = 5 -> 4.2649111.
  EXPECT_NEAR(At(*w, 0, 0), 3 - 1.2649110615375296, 1e-5);
  EXPECT_NEAR(At(*w, 1, 1), 3 + 1.2649110615375296, 1e-5);
  EXPECT_EQ(At(*w, 0, 3), 100.0);
}

// ----------------------------------------------------------------------------------------------------------------
// Clipped policy loss

TEST(ClippedPolicyLoss, ClipsAtBothEdgesWithZeroGradientWhereClipped) {
  // clip_range 0.2 -> ratio clipped to [0.8, 1.2]. Token-level terms -A*r and -A*clip(r), loss term = max of both:
  //   a: r = 1.5, A = +1: -1.5 vs -1.2 -> -1.2 (clipped above 1 + eps, gradient 0)
  //   b: r = 0.5, A = -1:  0.5 vs  0.8 ->  0.8 (clipped below 1 - eps, gradient 0)
  //   c: r = 1.5, A = -1:  1.5 vs  1.2 ->  1.5 (unclipped: the pessimistic term)
  //   d: r = 1.1, A = +2: -2.2 vs -2.2 -> -2.2 (inside the range)
  //   padding (NaN) ignored.
  //   loss = (-1.2 + 0.8 + 1.5 - 2.2) / 4 = -0.275; clip fraction = 2 / 4 = 0.5
  //   d loss / d new_logprob = -A * r / 4 where unclipped: c: 1.5 / 4 = 0.375, d: -2.2 / 4 = -0.55; a, b: 0
  //   approx_kl = 0.5 * mean(log r ^ 2) = 0.5 * (2 ln^2 1.5 + ln^2 0.5 + ln^2 1.1) / 4 = 0.10229261900985812
  //   k3 = mean((r - 1) - ln r) = ((0.5 - ln 1.5) * 2 + (-0.5 - ln 0.5) + (0.1 - ln 1.1)) / 4 = 0.09672669613482292
  //   ratio mean (1.5 + 0.5 + 1.5 + 1.1) / 4 = 1.15, min 0.5, max 1.5
  const std::vector<double> old_lp = {-1.0, -1.0, -2.0, -0.5};
  const at::Tensor old_logprobs = Mat({{old_lp[0], old_lp[1], kNan}, {old_lp[2], old_lp[3], kNan}});
  const at::Tensor new_logprobs =
      Mat({{old_lp[0] + std::log(1.5), old_lp[1] + std::log(0.5), kNan},
           {old_lp[2] + std::log(1.5), old_lp[3] + std::log(1.1), kNan}})
          .requires_grad_();
  const at::Tensor advantages = Mat({{1.0, -1.0, kNan}, {-1.0, 2.0, kNan}});
  auto out = ClippedPolicyLoss(new_logprobs, old_logprobs, advantages, Mask({{1, 1, 0}, {1, 1, 0}}),
                               PolicyLossOptions{0.2});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NEAR(out->loss.item<double>(), -0.275, kTol);
  EXPECT_NEAR(out->clip_fraction, 0.5, kTol);
  EXPECT_NEAR(out->approx_kl, 0.10229261900985812, kTol);
  EXPECT_NEAR(out->approx_kl_k3, 0.09672669613482292, kTol);
  EXPECT_NEAR(out->ratio_mean, 1.15, kTol);
  EXPECT_NEAR(out->ratio_min, 0.5, kTol);
  EXPECT_NEAR(out->ratio_max, 1.5, kTol);
  EXPECT_EQ(out->num_tokens, 4);
  out->loss.backward();
  ExpectMat(new_logprobs.grad(), {{0.0, 0.0, 0.0}, {0.375, -0.55, 0.0}});
}

TEST(ClippedPolicyLoss, EqualsMinusMeanAdvantageAtRatioOne) {
  // new == old: ratio 1, nothing clipped, loss = -mean(A) = -(1 + 3) / 2 = -2, gradient -A / 2.
  const at::Tensor lp = Mat({{-0.7, -1.3}}, at::kFloat).requires_grad_();
  auto out = ClippedPolicyLoss(lp, lp.detach(), Mat({{1.0, 3.0}}), Mask({{1, 1}}), PolicyLossOptions{});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NEAR(out->loss.item<double>(), -2.0, 1e-6);
  EXPECT_EQ(out->clip_fraction, 0.0);
  EXPECT_NEAR(out->approx_kl, 0.0, 1e-12);
  out->loss.backward();
  ExpectMat(lp.grad(), {{-0.5, -1.5}}, 1e-6);
}

TEST(ClippedPolicyLoss, RejectsBadArgumentsNamingThem) {
  const at::Tensor lp = Mat({{0.0, 0.0}});
  const at::Tensor mask = Mask({{1, 1}});
  ExpectInvalidArgument(ClippedPolicyLoss(lp, lp, lp, mask, PolicyLossOptions{0.0}).status(), "clip_range");
  ExpectInvalidArgument(ClippedPolicyLoss(lp, lp, Mat({{0.0}}), mask, PolicyLossOptions{}).status(), "advantages");
  ExpectInvalidArgument(ClippedPolicyLoss(lp, Mat({{0.0, 0.0, 0.0}}), lp, mask, PolicyLossOptions{}).status(),
                        "old_logprobs");
  ExpectInvalidArgument(ClippedPolicyLoss(lp, lp, lp, Mask({{0, 0}}), PolicyLossOptions{}).status(), "mask");
}

// ----------------------------------------------------------------------------------------------------------------
// Clipped value loss

TEST(ClippedValueLoss, MatchesHandValuesWithZeroGradientWhereClipped) {
  // value clip 0.2: v_clipped = old + clip(new - old, -0.2, 0.2).
  //   a: old 1.0, new 1.5, R 2.0: v_clipped 1.2; (1.5 - 2)^2 = 0.25 vs (1.2 - 2)^2 = 0.64 -> 0.64 (clipped)
  //   b: old 1.0, new 0.5, R 0.0: v_clipped 0.8; 0.25 vs 0.64 -> 0.64 (clipped)
  //   c: old 0.0, new 0.5, R 0.0: v_clipped 0.2; 0.25 vs 0.04 -> 0.25
  //   d: old 0.0, new 0.1, R 1.0: v_clipped 0.1; 0.81 vs 0.81 -> 0.81
  //   loss = 0.5 * (0.64 + 0.64 + 0.25 + 0.81) / 4 = 0.2925; clip fraction 2 / 4 = 0.5
  //   d loss / d new = 0.5 / 4 * 2 (new - R) where unclipped: c: 0.125, d: -0.225; a, b: 0
  const at::Tensor new_values = Mat({{1.5, 0.5, 0.5, 0.1, kNan}}).requires_grad_();
  const at::Tensor old_values = Mat({{1.0, 1.0, 0.0, 0.0, kNan}});
  const at::Tensor returns = Mat({{2.0, 0.0, 0.0, 1.0, kNan}});
  auto out = ClippedValueLoss(new_values, old_values, returns, Mask({{1, 1, 1, 1, 0}}), ValueLossOptions{0.2});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NEAR(out->loss.item<double>(), 0.2925, kTol);
  EXPECT_NEAR(out->clip_fraction, 0.5, kTol);
  EXPECT_EQ(out->num_tokens, 4);
  out->loss.backward();
  ExpectMat(new_values.grad(), {{0.0, 0.0, 0.125, -0.225, 0.0}});
}

TEST(ClippedValueLoss, RejectsBadArgumentsNamingThem) {
  const at::Tensor v = Mat({{0.0, 0.0}});
  ExpectInvalidArgument(ClippedValueLoss(v, v, v, Mask({{1, 1}}), ValueLossOptions{-1.0}).status(), "clip_range");
  ExpectInvalidArgument(ClippedValueLoss(v, v, Mat({{0.0}, {0.0}}), Mask({{1, 1}}), ValueLossOptions{}).status(),
                        "returns");
}

// ----------------------------------------------------------------------------------------------------------------
// Entropy and explained variance

TEST(Entropy, MatchesHandValuesAndHandlesBannedTokens) {
  // t0: uniform over 4 -> ln 4; t1: one token left (others -inf) -> 0; t2: padding (NaN) ignored.
  // mean = ln 4 / 2 = 0.6931471805599453
  const double inf = std::numeric_limits<double>::infinity();
  const at::Tensor logits =
      at::tensor(std::vector<double>{0, 0, 0, 0, 3, -inf, -inf, -inf, kNan, kNan, kNan, kNan}, at::kDouble)
          .view({1, 3, 4})
          .requires_grad_();
  auto h = Entropy(logits, Mask({{1, 1, 0}}));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_NEAR(h->item<double>(), 0.6931471805599453, kTol);
  h->backward();
  // At a uniform distribution the entropy is maximal: zero gradient; every gradient is finite.
  EXPECT_TRUE(logits.grad().isfinite().all().item<bool>());
  EXPECT_NEAR(logits.grad().abs().max().item<double>(), 0.0, kTol);
  ExpectInvalidArgument(Entropy(logits, Mask({{1, 1}})).status(), "mask has shape [1, 2] but must be [1, 3]");
}

TEST(ExplainedVariance, MatchesHandValue) {
  // V = [1, 2, 3, 4], R = [1.5, 2, 3.5, 5]; R - V = [0.5, 0, 0.5, 1] (mean 0.5, squared deviations sum 0.5);
  // R mean 3, squared deviations 2.25 + 1 + 0.25 + 4 = 7.5; EV = 1 - 0.5 / 7.5 = 0.9333333333333333.
  auto ev = ExplainedVariance(Mat({{1, 2, kNan}, {3, 4, 0}}), Mat({{1.5, 2, 9}, {3.5, 5, 9}}),
                              Mask({{1, 1, 0}, {1, 1, 0}}));
  ASSERT_TRUE(ev.ok()) << ev.status();
  EXPECT_NEAR(*ev, 0.9333333333333333, kTol);
  auto constant = ExplainedVariance(Mat({{1, 2}}), Mat({{3, 3}}), Mask({{1, 1}}));
  ASSERT_TRUE(constant.ok());
  EXPECT_TRUE(std::isnan(*constant));
}

// ----------------------------------------------------------------------------------------------------------------
// KL controllers

TEST(FixedKlController, KeepsBetaAndCountsSteps) {
  auto c = FixedKlController::Create(0.02);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Update(100.0, 64).ok());
  EXPECT_EQ((*c)->Beta(), 0.02);
  EXPECT_EQ((*c)->State().total_steps, 64);
  ExpectInvalidArgument(FixedKlController::Create(-1).status(), "beta");
}

TEST(AdaptiveKlController, MatchesHandUpdatesIncludingTheClip) {
  // init 0.1, target 6, horizon 10000:
  //   KL 7.5, n 1000: error 7.5 / 6 - 1 = 0.25 -> clipped to 0.2;  beta = 0.1 * (1 + 0.2 * 0.1)  = 0.102
  //   KL 3.0, n 500:  error 0.5 - 1 = -0.5 -> clipped to -0.2;     beta = 0.102 * (1 - 0.2 * 0.05) = 0.10098
  //   KL 6.6, n 2000: error 0.1 (inside);                           beta = 0.10098 * (1 + 0.1 * 0.2) = 0.1029996
  auto c = AdaptiveKlController::Create(AdaptiveKlOptions{0.1, 6.0, 10000});
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Update(7.5, 1000).ok());
  EXPECT_NEAR((*c)->Beta(), 0.102, 1e-15);
  ASSERT_TRUE((*c)->Update(3.0, 500).ok());
  EXPECT_NEAR((*c)->Beta(), 0.10098, 1e-15);
  ASSERT_TRUE((*c)->Update(6.6, 2000).ok());
  EXPECT_NEAR((*c)->Beta(), 0.1029996, 1e-15);
  EXPECT_EQ((*c)->State().total_steps, 3500);
  ExpectInvalidArgument((*c)->Update(kNan, 1), "current_kl");
  ExpectInvalidArgument((*c)->Update(1.0, -1), "n_steps");
  EXPECT_NEAR((*c)->Beta(), 0.1029996, 1e-15);  // unchanged by rejected updates
}

TEST(AdaptiveKlController, ResumesExactlyFromSavedState) {
  const AdaptiveKlOptions options{0.05, 0.5, 2000};
  auto a = AdaptiveKlController::Create(options);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE((*a)->Update(0.8, 64).ok());
  ASSERT_TRUE((*a)->Update(0.45, 64).ok());
  const KlControllerState saved = (*a)->State();

  auto b = CreateKlController(KlControllerOptions{KlControlMode::kAdaptive, 0.0, options});
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE((*b)->Restore(saved).ok());
  for (double kl : {0.7, 0.2, 0.5, 1.9}) {
    ASSERT_TRUE((*a)->Update(kl, 64).ok());
    ASSERT_TRUE((*b)->Update(kl, 64).ok());
    EXPECT_EQ((*a)->Beta(), (*b)->Beta());  // bit-identical
  }
  EXPECT_EQ((*a)->State().total_steps, (*b)->State().total_steps);
  ExpectInvalidArgument((*b)->Restore(KlControllerState{-1.0, 0}), "state.beta");
}

TEST(AdaptiveKlController, RejectsBadOptionsNamingTheField) {
  ExpectInvalidArgument(AdaptiveKlController::Create(AdaptiveKlOptions{0.1, 0.0, 10000}).status(), "target_kl");
  ExpectInvalidArgument(AdaptiveKlController::Create(AdaptiveKlOptions{0.1, 6.0, 0.0}).status(), "horizon");
  ExpectInvalidArgument(
      CreateKlController(KlControllerOptions{KlControlMode::kAdaptive, 0.0, AdaptiveKlOptions{0.0, 6.0, 1.0}})
          .status(),
      "adaptive.init_beta");
  auto mode = ParseKlControlMode("adaptive");
  ASSERT_TRUE(mode.ok());
  EXPECT_EQ(*mode, KlControlMode::kAdaptive);
  ExpectInvalidArgument(ParseKlControlMode("pid").status(), "pid");
}

// ----------------------------------------------------------------------------------------------------------------
// LM and ranking losses

TEST(ResponseNll, AveragesOverResponseTokensOnly) {
  // V = 3. t0: logits [0, 0, 0], target 1 -> -log(1/3) = ln 3.
  //        t1: logits [0, ln 2, 0] -> p = [1/4, 1/2, 1/4], target 1 -> ln 2.
  //        t2: a prompt position (masked), target -100 and NaN logits: ignored.
  //   loss = (ln 3 + ln 2) / 2 = ln 6 / 2 = 0.8958797346140275
  const at::Tensor logits =
      at::tensor(std::vector<double>{0, 0, 0, 0, std::log(2.0), 0, kNan, kNan, kNan}, at::kDouble)
          .view({1, 3, 3})
          .to(at::kFloat);
  const at::Tensor targets = at::tensor(std::vector<int64_t>{1, 1, -100}, at::kLong).view({1, 3});
  auto out = ResponseNll(logits, targets, Mask({{1, 1, 0}}));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NEAR(out->loss.item<double>(), 0.8958797346140275, 1e-6);
  EXPECT_EQ(out->num_tokens, 2);
}

TEST(ResponseNll, RejectsOutOfVocabularyTargetsNamingThePosition) {
  const at::Tensor logits = at::zeros({2, 2, 3}, at::kFloat);
  const at::Tensor targets = at::tensor(std::vector<int64_t>{0, 1, 2, 3}, at::kLong).view({2, 2});
  ExpectInvalidArgument(ResponseNll(logits, targets, Mask({{1, 1}, {1, 1}})).status(),
                        "target_ids[1][1]=3 is outside the vocabulary [0, 3)");
  EXPECT_TRUE(ResponseNll(logits, targets, Mask({{1, 1}, {1, 0}})).ok());  // masked: never read
  ExpectInvalidArgument(ResponseNll(logits, targets.to(at::kFloat), Mask({{1, 1}, {1, 1}})).status(),
                        "target_ids must be an integer");
  ExpectInvalidArgument(ResponseNll(logits, targets, Mask({{0, 0}, {0, 0}})).status(), "loss_mask");
}

TEST(PairwiseRankingLoss, MatchesHandValueOnThreeResponses) {
  // Labeler ranking A > B > C, RM scores A = 1, B = 2, C = 0: pairs (A,B), (A,C), (B,C), margins -1, 1, 2.
  //   -log sigmoid(m) = softplus(-m): softplus(1) = 1.3132616875182228, softplus(-1) = 0.31326168751822286,
  //   softplus(-2) = 0.1269280110429725; loss = sum / 3 = 0.584483795359806. Accuracy 2 / 3, mean margin 2 / 3.
  const at::Tensor chosen = Vec({1.0, 1.0, 2.0}).requires_grad_();
  const at::Tensor rejected = Vec({2.0, 0.0, 0.0});
  auto out = PairwiseRankingLoss(chosen, rejected);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NEAR(out->loss.item<double>(), 0.584483795359806, kTol);
  EXPECT_NEAR(out->accuracy, 2.0 / 3.0, kTol);
  EXPECT_NEAR(out->mean_margin, 2.0 / 3.0, kTol);
  EXPECT_EQ(out->num_pairs, 3);
  out->loss.backward();
  // d loss / d chosen_i = -sigmoid(-m_i) / 3: sigmoid(1) = 0.7310585786300049, sigmoid(-1) = 0.2689414213699951,
  // sigmoid(-2) = 0.11920292202211755.
  EXPECT_NEAR(chosen.grad()[0].item<double>(), -0.7310585786300049 / 3, kTol);
  EXPECT_NEAR(chosen.grad()[1].item<double>(), -0.2689414213699951 / 3, kTol);
  EXPECT_NEAR(chosen.grad()[2].item<double>(), -0.11920292202211755 / 3, kTol);
}

TEST(PairwiseRankingLoss, CountsTiesAsHalfAndRejectsBadShapes) {
  auto tie = PairwiseRankingLoss(Vec({0.0, 0.0}), Vec({0.0, 1.0}));
  ASSERT_TRUE(tie.ok());
  EXPECT_NEAR(tie->accuracy, 0.25, kTol);
  ExpectInvalidArgument(PairwiseRankingLoss(Vec({0.0, 0.0}), Vec({0.0})).status(), "rejected_scores");
  ExpectInvalidArgument(PairwiseRankingLoss(Vec({}), Vec({})).status(), "at least one pair");
}

}  // namespace
}  // namespace rlhf::rl
