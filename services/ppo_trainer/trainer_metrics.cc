#include "services/ppo_trainer/trainer_metrics.h"

namespace rlhf::trainer {
namespace {

prometheus::Gauge& Gauge(prometheus::Registry& registry, const std::string& name, const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add({});
}

}  // namespace

TrainerMetrics::TrainerMetrics(prometheus::Registry& registry)
    : steps_family(prometheus::BuildCounter()
                       .Name("rlhf_trainer_steps_total")
                       .Help("Optimiser steps (sft, reward_model) and PPO steps (ppo) completed")
                       .Register(registry)),
      loss_family(prometheus::BuildGauge()
                      .Name("rlhf_trainer_loss")
                      .Help("Latest training loss of the stage")
                      .Register(registry)),
      step_seconds_family(prometheus::BuildHistogram()
                              .Name("rlhf_trainer_step_seconds")
                              .Help("Wall-clock seconds of one step of the stage")
                              .Register(registry)),
      tokens_family(prometheus::BuildCounter()
                        .Name("rlhf_trainer_tokens_total")
                        .Help("Response tokens trained on")
                        .Register(registry)),
      ppo_reward_mean(Gauge(registry, "rlhf_trainer_ppo_reward_mean", "Mean reward-model score of the latest PPO batch")),
      ppo_kl_mean(Gauge(registry, "rlhf_trainer_ppo_kl_mean",
                        "Mean KL(policy || reference) per response of the latest PPO batch, nats")),
      kl_coef(Gauge(registry, "rlhf_trainer_kl_coef", "KL coefficient beta of the latest PPO step")),
      ppo_policy_loss(Gauge(registry, "rlhf_trainer_ppo_policy_loss", "Clipped surrogate loss of the latest PPO step")),
      ppo_value_loss(Gauge(registry, "rlhf_trainer_ppo_value_loss", "Value loss of the latest PPO step")),
      ppo_clip_fraction(Gauge(registry, "rlhf_trainer_ppo_clip_fraction",
                              "Fraction of tokens whose policy ratio was clipped in the latest PPO step")),
      last_checkpoint_timestamp(Gauge(registry, "rlhf_trainer_last_checkpoint_timestamp_seconds",
                                      "Unix time of the latest checkpoint the trainer wrote")),
      model_version(prometheus::BuildGauge()
                        .Name("rlhf_model_version")
                        .Help("Version of the served or trained weights")
                        .Register(registry)
                        .Add({{"service", "ppo-trainer"}})) {}

prometheus::Histogram& TrainerMetrics::StepSeconds(const std::string& stage) {
  return step_seconds_family.Add({{"stage", stage}},
                                 prometheus::Histogram::BucketBoundaries{0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300});
}

}  // namespace rlhf::trainer
