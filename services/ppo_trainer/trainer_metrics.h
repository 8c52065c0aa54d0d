// Prometheus metrics of the trainer, built once on the server's registry:
//   rlhf_trainer_steps_total{stage}                 counter: optimiser steps (sft, reward_model) and PPO steps (ppo)
//   rlhf_trainer_loss{stage}                        gauge: latest training loss of the stage
//   rlhf_trainer_step_seconds{stage}                histogram: wall-clock time of a PPO step / between stage steps
//   rlhf_trainer_tokens_total{stage}                counter: response tokens trained on (ppo)
//   rlhf_trainer_ppo_reward_mean                    gauge: mean reward-model score of the latest PPO batch
//   rlhf_trainer_ppo_kl_mean                        gauge: mean KL(policy || reference) per response, nats
//   rlhf_trainer_kl_coef                            gauge: beta used by the latest PPO step
//   rlhf_trainer_ppo_policy_loss, rlhf_trainer_ppo_value_loss, rlhf_trainer_ppo_clip_fraction   gauges
//   rlhf_trainer_last_checkpoint_timestamp_seconds  gauge: Unix time of the latest checkpoint written
//   rlhf_model_version{service="ppo-trainer"}       gauge: policy version
#ifndef RLHF_SERVICES_PPO_TRAINER_TRAINER_METRICS_H_
#define RLHF_SERVICES_PPO_TRAINER_TRAINER_METRICS_H_

#include <string>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace rlhf::trainer {

struct TrainerMetrics {
  explicit TrainerMetrics(prometheus::Registry& registry);

  prometheus::Counter& Steps(const std::string& stage) { return steps_family.Add({{"stage", stage}}); }
  prometheus::Gauge& Loss(const std::string& stage) { return loss_family.Add({{"stage", stage}}); }
  prometheus::Histogram& StepSeconds(const std::string& stage);
  prometheus::Counter& Tokens(const std::string& stage) { return tokens_family.Add({{"stage", stage}}); }

  prometheus::Family<prometheus::Counter>& steps_family;
  prometheus::Family<prometheus::Gauge>& loss_family;
  prometheus::Family<prometheus::Histogram>& step_seconds_family;
  prometheus::Family<prometheus::Counter>& tokens_family;
  prometheus::Gauge& ppo_reward_mean;
  prometheus::Gauge& ppo_kl_mean;
  prometheus::Gauge& kl_coef;
  prometheus::Gauge& ppo_policy_loss;
  prometheus::Gauge& ppo_value_loss;
  prometheus::Gauge& ppo_clip_fraction;
  prometheus::Gauge& last_checkpoint_timestamp;
  prometheus::Gauge& model_version;
};

}  // namespace rlhf::trainer

#endif  // RLHF_SERVICES_PPO_TRAINER_TRAINER_METRICS_H_
