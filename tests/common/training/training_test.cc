#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <ATen/ops/ones.h>
#include <ATen/ops/tensor.h>
#include <c10/core/GradMode.h>

#include "common/model/causal_lm.h"
#include "common/model/sampler.h"
#include "common/training/optimizer.h"
#include "common/training/ppo_learner.h"
#include "common/training/reward_trainer.h"
#include "common/training/sft_trainer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rlhf::training {
namespace {

using ::testing::HasSubstr;

// Token ids of the toy tasks: 0 pad, 1 separator, 2 EOS, 3.. words.
constexpr int64_t kSep = 1;
constexpr int64_t kEos = 2;

std::unique_ptr<model::CausalLm> TinyModel(uint64_t seed, bool reward_head = false, bool value_head = false,
                                            int64_t vocab = 16, int64_t width = 32) {
  model::ModelConfig config;
  config.SetShape(2, width, 4);
  config.max_position_embeddings = 32;
  config.vocab_size = vocab;
  model::ModelOptions options;
  options.init_seed = seed;
  options.reward_head = reward_head;
  options.value_head = value_head;
  auto model = model::CreateModel(config, options);
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(*model);
}

std::unique_ptr<model::CausalLm> CloneModel(const model::CausalLm& source) {
  auto copy = model::CreateModel(source.config(), source.options());
  EXPECT_TRUE(copy.ok());
  c10::NoGradGuard no_grad;
  auto src = source.NamedParameters();
  auto dst = (*copy)->NamedParameters();
  for (size_t i = 0; i < src.size(); ++i) dst[i].tensor.copy_(src[i].tensor);
  return std::move(*copy);
}

// ---------------------------------------------------------------------------------------------------------------
// Optimiser

TEST(ScheduledLearningRate, WarmsUpLinearlyThenDecaysAlongACosineToTheFloor) {
  OptimizerOptions o;
  o.learning_rate = 1.0;
  o.warmup_steps = 4;
  o.total_steps = 14;
  o.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(o, 0), 0.25);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(o, 3), 1.0);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(o, 4), 1.0);
  EXPECT_NEAR(ScheduledLearningRate(o, 9), 0.1 + 0.9 * 0.5, 1e-12);  // half way: cos(pi/2) = 0
  EXPECT_NEAR(ScheduledLearningRate(o, 14), 0.1, 1e-12);
  EXPECT_NEAR(ScheduledLearningRate(o, 100), 0.1, 1e-12);
  o.total_steps = 0;
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(o, 100), 1.0);
}

TEST(AdamW, FirstStepsMatchHandComputedUpdates) {
  at::Tensor w = at::tensor({1.0f, -2.0f}).reshape({1, 2}).set_requires_grad(true);
  OptimizerOptions o;
  o.learning_rate = 0.1;
  o.min_lr_ratio = 1.0;
  o.beta1 = 0.9;
  o.beta2 = 0.99;
  o.epsilon = 1e-8;
  o.weight_decay = 0.5;
  auto adam = AdamW::Create({{"w", w}}, o);
  ASSERT_TRUE(adam.ok()) << adam.status();
  // Step 1 with gradient g = (0.5, -1): m = 0.1 g, v = 0.01 g^2; bias-corrected m/sqrt(v) = sign(g).
  w.mutable_grad() = at::tensor({0.5f, -1.0f}).reshape({1, 2});
  ASSERT_TRUE((*adam)->Step().ok());
  // Decoupled decay first: w *= 1 - 0.1 * 0.5; then w -= 0.1 * sign(g).
  EXPECT_NEAR(w[0][0].item<double>(), 1.0 * 0.95 - 0.1, 1e-6);
  EXPECT_NEAR(w[0][1].item<double>(), -2.0 * 0.95 + 0.1, 1e-6);
  // Step 2 with gradient (1, 0): m = (0.09*0.5... computed by hand below.
  w.mutable_grad() = at::tensor({1.0f, 0.0f}).reshape({1, 2});
  const double before0 = w[0][0].item<double>();
  ASSERT_TRUE((*adam)->Step().ok());
  const double m = 0.9 * 0.05 + 0.1 * 1.0, v = 0.99 * 0.0025 + 0.01 * 1.0;
  const double expected = before0 * 0.95 - 0.1 * (m / (1 - 0.81)) / (std::sqrt(v / (1 - 0.9801)) + 1e-8);
  EXPECT_NEAR(w[0][0].item<double>(), expected, 1e-6);
  EXPECT_EQ((*adam)->steps(), 2);
}

TEST(AdamW, ClipsTheGlobalGradientNormAndRejectsNonFiniteGradients) {
  at::Tensor w = at::zeros({1, 2}).set_requires_grad(true);
  OptimizerOptions o;
  o.learning_rate = 1.0;
  o.max_grad_norm = 1.0;
  auto adam = AdamW::Create({{"w", w}}, o);
  ASSERT_TRUE(adam.ok());
  w.mutable_grad() = at::tensor({3.0f, 4.0f}).reshape({1, 2});
  auto step = (*adam)->Step();
  ASSERT_TRUE(step.ok());
  EXPECT_NEAR(step->grad_norm, 5.0, 1e-6);
  w.mutable_grad() = at::tensor({NAN, 0.0f}).reshape({1, 2});
  auto bad = (*adam)->Step();
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("not finite"));
}

TEST(AdamW, RejectsBadOptionsNamingTheField) {
  OptimizerOptions o;
  o.learning_rate = -1;
  auto status = ValidateOptimizerOptions(o, "hparams.optimizer");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("hparams.optimizer.learning_rate"));
}

// ---------------------------------------------------------------------------------------------------------------
// SFT: the toy task "a b SEP -> b a EOS" (swap two words).

std::vector<PromptResponse> SwapTask(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<PromptResponse> out;
  for (int i = 0; i < n; ++i) {
    const int64_t a = 3 + static_cast<int64_t>(rng() % 13), b = 3 + static_cast<int64_t>(rng() % 13);
    out.push_back({{a, b, kSep}, {b, a, kEos}});
  }
  return out;
}

TEST(TrainSft, LowersValidationLossAndLearnsTheDemonstratedFormat) {
  auto model = TinyModel(3);
  const auto train = SwapTask(512, 1), validation = SwapTask(64, 2);
  auto before = EvaluateResponseLoss(*model, validation, 32);
  ASSERT_TRUE(before.ok());
  SftOptions options;
  options.epochs = 6;
  options.batch_size = 32;
  options.dropout = 0.0;
  options.optimizer.learning_rate = 3e-3;
  options.selection = EpochSelection::kValidationLoss;
  int events = 0;
  auto result = TrainSft(*model, train, validation, options, [&](const TrainingProgress& p) {
    ++events;
    EXPECT_LE(p.step, p.total_steps);
    return absl::OkStatus();
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->steps, 6 * 16);
  EXPECT_EQ(events, 6 * 16 + 6);
  ASSERT_EQ(result->epoch_validation_loss.size(), 6u);
  const double best = *std::min_element(result->epoch_validation_loss.begin(), result->epoch_validation_loss.end());
  EXPECT_LT(best, *before * 0.5) << "validation loss " << *before << " -> " << best;
  auto after = EvaluateResponseLoss(*model, validation, 32);
  ASSERT_TRUE(after.ok());
  EXPECT_NEAR(*after, best, 1e-5) << "the model holds the selected epoch's weights";

  // Greedy generation follows the format: the two words swapped, then EOS.
  auto sampler = model::Sampler::Create(model.get());
  ASSERT_TRUE(sampler.ok());
  std::vector<std::vector<int64_t>> prompts;
  for (const PromptResponse& v : validation) prompts.push_back(v.prompt);
  model::SamplingOptions sampling;
  sampling.temperature = 0;
  sampling.max_new_tokens = 4;
  sampling.eos_token_ids = {kEos};
  auto generated = (*sampler)->Generate(prompts, sampling);
  ASSERT_TRUE(generated.ok());
  int right = 0;
  for (size_t i = 0; i < validation.size(); ++i) right += (*generated)[i].tokens == validation[i].response;
  EXPECT_GE(right, 58) << "of 64 validation prompts answered exactly";
}

TEST(TrainSft, KeepsTheEpochWithTheBestScore) {
  auto model = TinyModel(3);
  const auto train = SwapTask(128, 1), validation = SwapTask(32, 2);
  SftOptions options;
  options.epochs = 3;
  options.batch_size = 32;
  options.dropout = 0.0;
  options.optimizer.learning_rate = 3e-3;
  options.selection = EpochSelection::kScore;
  int epoch = 0;
  const double scores[] = {0.5, 0.9, 0.1};  // e.g. the mean reward of sampled responses after each epoch
  options.epoch_score = [&](const model::CausalLm&) -> absl::StatusOr<double> { return scores[epoch++]; };
  auto result = TrainSft(*model, train, validation, options, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->selected_epoch, 2);
  EXPECT_DOUBLE_EQ(result->metrics.at("val/reward_score"), 0.9);
  auto loss = EvaluateResponseLoss(*model, validation, 32);
  ASSERT_TRUE(loss.ok());
  EXPECT_NEAR(*loss, result->epoch_validation_loss[1], 1e-5) << "the model holds epoch 2's weights";
  options.epoch_score = nullptr;
  EXPECT_EQ(TrainSft(*model, train, validation, options, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TrainSft, RejectsBadExamplesNamingThem) {
  auto model = TinyModel(3);
  std::vector<PromptResponse> train = {{{3, kSep}, {4, kEos}}, {{3, kSep}, {}}};
  auto result = TrainSft(*model, train, {}, SftOptions{}, nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("train[1].response is empty"));
  train = {{{3, 99}, {4, kEos}}};
  result = TrainSft(*model, train, {}, SftOptions{}, nullptr);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("train[0].prompt[1]=99"));
}

TEST(TrainSft, StopsWhenTheProgressSinkSaysSo) {
  auto model = TinyModel(3);
  SftOptions options;
  options.epochs = 3;
  auto result = TrainSft(*model, SwapTask(64, 1), {}, options, [](const TrainingProgress& p) {
    return p.step >= 2 ? absl::CancelledError("caller went away") : absl::OkStatus();
  });
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
}

// ---------------------------------------------------------------------------------------------------------------
// Reward model

TEST(RewardModel, LossOnAThreeResponseRankingEqualsTheHandComputedValue) {
  auto model = TinyModel(5, /*reward_head=*/true);
  {
    c10::NoGradGuard no_grad;  // a non-zero head, so that scores differ
    for (const auto& p : model->NamedParameters()) {
      if (p.name == "score.weight") p.tensor.normal_(0, 1);
    }
  }
  ComparisonGroup group{{3, 4, kSep}, {{5, kEos}, {6, 7, kEos}, {8, kEos}}, {{0, 1}, {0, 2}, {1, 2}}};
  auto scores = ScoreSequences(*model, {{group.prompt, group.responses[0]},
                                        {group.prompt, group.responses[1]},
                                        {group.prompt, group.responses[2]}});
  ASSERT_TRUE(scores.ok()) << scores.status();
  const double r0 = (*scores)[0], r1 = (*scores)[1], r2 = (*scores)[2];
  auto nls = [](double x) { return std::log1p(std::exp(-x)); };  // -log sigmoid(x)
  const double expected = (nls(r0 - r1) + nls(r0 - r2) + nls(r1 - r2)) / 3.0;
  const double accuracy = ((r0 > r1) + (r0 > r2) + (r1 > r2)) / 3.0;
  auto metrics = EvaluatePairs(*model, {group});
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_NEAR(metrics->loss, expected, 1e-5);
  EXPECT_NEAR(metrics->accuracy, accuracy, 1e-9);
  EXPECT_EQ(metrics->pairs, 3);
}

// Synthetic preference: longer answers are better. Responses are 1-6 random words then EOS.
std::vector<ComparisonGroup> LengthPreference(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<ComparisonGroup> out;
  for (int i = 0; i < n; ++i) {
    ComparisonGroup g;
    g.prompt = {3 + static_cast<int64_t>(rng() % 13), kSep};
    std::vector<size_t> lengths;
    while (lengths.size() < 4) {
      const size_t len = 1 + rng() % 6;
      if (std::find(lengths.begin(), lengths.end(), len) == lengths.end()) lengths.push_back(len);
    }
    for (size_t len : lengths) {
      std::vector<int64_t> r;
      for (size_t j = 0; j < len; ++j) r.push_back(3 + static_cast<int64_t>(rng() % 13));
      r.push_back(kEos);
      g.responses.push_back(r);
    }
    for (int32_t a = 0; a < 4; ++a) {
      for (int32_t b = a + 1; b < 4; ++b) {
        if (lengths[a] > lengths[b]) g.pairs.push_back({a, b});
        else g.pairs.push_back({b, a});
      }
    }
    out.push_back(std::move(g));
  }
  return out;
}

TEST(RewardModel, LearnsASyntheticPreferenceAndNormalisesDemonstrationsToMeanZero) {
  auto model = TinyModel(7, /*reward_head=*/true);
  const auto train = LengthPreference(600, 1), validation = LengthPreference(100, 2);
  RewardTrainingOptions options;
  options.epochs = 2;
  options.prompts_per_batch = 16;
  options.optimizer.learning_rate = 1e-3;
  auto result = TrainRewardModel(*model, train, validation, options, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(result->metrics.at("val/accuracy"), 0.9);
  EXPECT_LT(result->metrics.at("val/loss"), 0.5);

  std::vector<PromptResponse> demos = SwapTask(50, 9);
  auto bias = NormalizeRewardModel(*model, demos);
  ASSERT_TRUE(bias.ok()) << bias.status();
  auto scores = ScoreSequences(*model, demos);
  ASSERT_TRUE(scores.ok());
  double mean = 0;
  for (float s : *scores) mean += s;
  EXPECT_NEAR(mean / scores->size(), 0.0, 1e-3);
  auto stored = RewardBias(*model);
  ASSERT_TRUE(stored.ok());
  EXPECT_DOUBLE_EQ(*stored, *bias);
  // Normalisation shifts every score by the same amount: accuracy is unchanged.
  auto after = EvaluatePairs(*model, validation);
  ASSERT_TRUE(after.ok());
  EXPECT_NEAR(after->accuracy, result->metrics.at("val/accuracy"), 1e-9);
}

TEST(RewardModel, RejectsMalformedGroupsNamingThem) {
  auto model = TinyModel(7, /*reward_head=*/true);
  std::vector<ComparisonGroup> groups = {{{3, kSep}, {{4, kEos}, {5, kEos}}, {{0, 1}}},
                                         {{3, kSep}, {{4, kEos}}, {{0, 0}}}};
  auto result = TrainRewardModel(*model, groups, {}, {}, nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("train[1] has fewer than 2 responses"));
  auto no_head = TinyModel(7);
  EXPECT_EQ(TrainRewardModel(*no_head, {groups[0]}, {}, {}, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------------------------
// PPO on a toy reward: score = number of times token kTarget appears in the response.

constexpr int64_t kTarget = 5;

struct PpoRun {
  std::vector<double> mean_reward;
  std::vector<double> kl;
  std::vector<PpoStepStats> stats;
};

std::vector<Rollout> SampleRollouts(const model::CausalLm& policy, const model::CausalLm& reference, int n,
                                    uint64_t seed) {
  auto sampler = model::Sampler::Create(&policy);
  EXPECT_TRUE(sampler.ok());
  std::vector<std::vector<int64_t>> prompts;
  for (int i = 0; i < n; ++i) prompts.push_back({3 + (i % 10), kSep});
  model::SamplingOptions sampling;
  sampling.max_new_tokens = 8;
  sampling.eos_token_ids = {kEos};
  sampling.seed = seed;
  auto generated = (*sampler)->Generate(prompts, sampling);
  EXPECT_TRUE(generated.ok());
  std::vector<model::ScoreRequest> score_rows;
  for (int i = 0; i < n; ++i) score_rows.push_back({prompts[i], (*generated)[i].tokens});
  auto ref = model::ScoreLogProbs(reference, score_rows);
  EXPECT_TRUE(ref.ok());
  std::vector<Rollout> rollouts;
  for (int i = 0; i < n; ++i) {
    Rollout r;
    r.prompt = prompts[i];
    r.response = (*generated)[i].tokens;
    r.sampling_logprobs = (*generated)[i].logprobs;
    r.reference_logprobs = (*ref)[i];
    r.score = static_cast<double>(std::count(r.response.begin(), r.response.end(), kTarget));
    r.ended_with_stop = (*generated)[i].finish_reason == model::FinishReason::kEos;
    rollouts.push_back(std::move(r));
  }
  return rollouts;
}

PpoOptions ToyPpoOptions(double beta) {
  PpoOptions o;
  o.kl.beta = beta;
  o.ppo_epochs = 4;
  o.minibatch_size = 16;
  o.policy_optimizer.learning_rate = 1e-3;
  o.policy_optimizer.min_lr_ratio = 1.0;
  o.value_optimizer.learning_rate = 3e-3;
  o.value_optimizer.min_lr_ratio = 1.0;
  o.value_loss_coef = 1.0;
  return o;
}

PpoRun RunToyPpo(double beta, int iterations) {
  auto policy = std::shared_ptr<model::CausalLm>(TinyModel(11));
  auto reference = CloneModel(*policy);
  auto value = std::shared_ptr<model::CausalLm>(TinyModel(12, false, /*value_head=*/true));
  auto learner = PpoLearner::Create(policy, value);
  EXPECT_TRUE(learner.ok()) << learner.status();
  PpoRun run;
  for (int it = 0; it < iterations; ++it) {
    auto rollouts = SampleRollouts(*policy, *reference, 64, 100 + it);
    auto stats = (*learner)->Step(rollouts, ToyPpoOptions(beta));
    EXPECT_TRUE(stats.ok()) << stats.status();
    if (!stats.ok()) break;
    run.mean_reward.push_back(stats->mean_reward);
    run.kl.push_back(stats->mean_kl);
    run.stats.push_back(*stats);
  }
  return run;
}

double Mean(const std::vector<double>& v, size_t from, size_t to) {
  double s = 0;
  for (size_t i = from; i < to; ++i) s += v[i];
  return s / static_cast<double>(to - from);
}

TEST(PpoLearner, RaisesAToyRewardWithBoundedKlAndALargeBetaStaysNearTheReference) {
  const int iterations = 30;
  PpoRun free_run = RunToyPpo(/*beta=*/0.5, iterations);
  ASSERT_EQ(free_run.mean_reward.size(), static_cast<size_t>(iterations));
  PpoRun held = RunToyPpo(/*beta=*/5.0, iterations);
  ASSERT_EQ(held.kl.size(), static_cast<size_t>(iterations));
  const double start = Mean(free_run.mean_reward, 0, 3), end = Mean(free_run.mean_reward, iterations - 3, iterations);
  EXPECT_GT(end, start + 1.0) << "mean reward " << start << " -> " << end;
  // The KL-regularised optimum puts about e^(1/beta) times the reference probability on the target token: a few
  // nats over 8 tokens, far from the ~18 nats of a collapsed policy.
  for (double kl : free_run.kl) EXPECT_LT(kl, 6.0);
  for (size_t i = 0; i < free_run.kl.size(); ++i) {
    std::printf("iteration %2zu: beta 0.5 reward %.3f kl %.3f | beta 5 reward %.3f kl %.3f\n", i,
                free_run.mean_reward[i], free_run.kl[i], held.mean_reward[i], held.kl[i]);
  }
  for (const PpoStepStats& s : free_run.stats) {
    EXPECT_GE(s.clip_fraction, 0.0);
    EXPECT_LE(s.clip_fraction, 1.0);
    EXPECT_GT(s.entropy, 0.0);
    EXPECT_EQ(s.kl_estimator, "k1");
  }

  const double held_end = Mean(held.mean_reward, iterations - 3, iterations);
  EXPECT_LT(Mean(held.kl, iterations - 3, iterations), 0.5 * Mean(free_run.kl, iterations - 3, iterations));
  EXPECT_LT(held_end, end) << "a large beta keeps the policy near the reference";
}

TEST(PpoLearner, RestoredStateGivesTheSameNextStepAsAnUninterruptedRun) {
  auto policy = std::shared_ptr<model::CausalLm>(TinyModel(21));
  auto reference = CloneModel(*policy);
  auto value = std::shared_ptr<model::CausalLm>(TinyModel(22, false, true));
  auto learner = PpoLearner::Create(policy, value);
  ASSERT_TRUE(learner.ok());
  PpoOptions options = ToyPpoOptions(0.1);
  options.kl.mode = rl::KlControlMode::kAdaptive;
  options.kl.adaptive.init_beta = 0.1;
  options.kl.adaptive.target_kl = 0.2;
  options.kl.adaptive.horizon = 100;
  options.policy_ema_decay = 0.9;
  auto first = SampleRollouts(*policy, *reference, 32, 1);
  ASSERT_TRUE((*learner)->Step(first, options).ok());
  // Snapshot after step 1.
  auto saved_policy = CloneModel(*policy);
  auto saved_value = CloneModel(*value);
  std::map<std::string, at::Tensor> saved_tensors;
  for (const auto& [k, v] : (*learner)->StateTensors()) saved_tensors[k] = v.clone();
  const PpoLearnerState saved_state = (*learner)->State();
  auto second = SampleRollouts(*policy, *reference, 32, 2);
  auto uninterrupted = (*learner)->Step(second, options);
  ASSERT_TRUE(uninterrupted.ok());

  auto resumed = PpoLearner::Create(std::shared_ptr<model::CausalLm>(std::move(saved_policy)),
                                    std::shared_ptr<model::CausalLm>(std::move(saved_value)));
  ASSERT_TRUE(resumed.ok());
  ASSERT_TRUE((*resumed)->Restore(saved_tensors, saved_state).ok());
  auto again = (*resumed)->Step(second, options);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->step, 2);
  EXPECT_DOUBLE_EQ(again->policy_loss, uninterrupted->policy_loss);
  EXPECT_DOUBLE_EQ(again->value_loss, uninterrupted->value_loss);
  EXPECT_DOUBLE_EQ(again->kl_beta, uninterrupted->kl_beta);
  EXPECT_DOUBLE_EQ(again->next_kl_beta, uninterrupted->next_kl_beta);
  EXPECT_DOUBLE_EQ(again->approx_kl, uninterrupted->approx_kl);
  EXPECT_NE(again->kl_beta, 0.1) << "the adaptive controller moved and its state came back";
  for (const auto& [name, tensor] : (*learner)->ema_weights()) {
    EXPECT_TRUE(tensor.equal((*resumed)->ema_weights().at(name))) << name;
  }
}

TEST(PpoLearner, RejectsMalformedRolloutsNamingTheField) {
  auto policy = std::shared_ptr<model::CausalLm>(TinyModel(21));
  auto value = std::shared_ptr<model::CausalLm>(TinyModel(22, false, true));
  auto learner = PpoLearner::Create(policy, value);
  ASSERT_TRUE(learner.ok());
  Rollout r;
  r.prompt = {3, kSep};
  r.response = {4, kEos};
  r.reference_logprobs = {-1.0f};
  auto result = (*learner)->Step({r, r}, ToyPpoOptions(0.1));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("rollouts[0].reference_logprobs has 1 entries"));
  PpoOptions bad = ToyPpoOptions(0.1);
  bad.clip_range = 0;
  r.reference_logprobs = {-1.0f, -1.0f};
  EXPECT_THAT(std::string((*learner)->Step({r}, bad).status().message()), HasSubstr("hparams.clip_range"));
  EXPECT_EQ((*learner)->steps(), 0);
}

TEST(InitValueHeadFromRewardHead, CopiesTheScalarHead) {
  auto model = TinyModel(31, true, true);
  {
    c10::NoGradGuard no_grad;
    for (const auto& p : model->NamedParameters()) {
      if (p.name == "score.weight") p.tensor.fill_(0.25);
      if (p.name == "score.bias") p.tensor.fill_(-0.5);
    }
  }
  ASSERT_TRUE(InitValueHeadFromRewardHead(*model).ok());
  for (const auto& p : model->NamedParameters()) {
    if (p.name == "value_head.weight") {
      EXPECT_TRUE(p.tensor.eq(0.25).all().item<bool>());
    }
    if (p.name == "value_head.bias") {
      EXPECT_TRUE(p.tensor.eq(-0.5).all().item<bool>());
    }
  }
}

}  // namespace
}  // namespace rlhf::training
