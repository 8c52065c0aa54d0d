// The learning side of PPO for RLHF (InstructGPT step 3): takes a batch of rollouts (prompt, response, sampling and
// reference log-probs, reward-model score), computes per-token rewards (score at the last token, -beta * KL at
// every token, InstructGPT eq. (2)), values from the value model, GAE advantages and returns, then runs epochs of
// minibatch updates of the clipped surrogate and the clipped value loss, optionally with the PPO-ptx pretraining
// loss, and updates the KL controller. Holds the policy, the value model, their AdamW states, the KL controller and
// an optional EMA of the policy weights: everything a checkpoint must hold to resume exactly.
#ifndef RLHF_COMMON_TRAINING_PPO_LEARNER_H_
#define RLHF_COMMON_TRAINING_PPO_LEARNER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "common/model/causal_lm.h"
#include "common/rl/kl.h"
#include "common/training/optimizer.h"

namespace rlhf::training {

struct Rollout {
  std::vector<int64_t> prompt;               // non-empty
  std::vector<int64_t> response;             // non-empty; the stop token included when emitted
  std::vector<float> sampling_logprobs;      // one per response token (pi_old); empty: recomputed by the learner
  std::vector<float> reference_logprobs;     // one per response token (pi_SFT); empty only when beta is 0
  double score = 0;                          // reward-model score (normalised)
  bool ended_with_stop = true;               // false: no_stop_token_penalty is added to the score
};

struct PpoOptions {
  rl::KlControllerOptions kl;          // beta of the per-token penalty and its controller
  rl::KlEstimator kl_estimator = rl::KlEstimator::kK1;  // for the reported mean_kl only
  double gamma = 1.0;
  double gae_lambda = 0.95;
  double clip_range = 0.2;
  double value_clip_range = 0.2;       // 0: no value clipping
  double value_loss_coef = 0.1;
  int32_t ppo_epochs = 1;
  int32_t minibatch_size = 64;
  bool whiten_advantages = true;       // per minibatch
  double sampling_temperature = 1.0;   // logits are divided by it when log-probs are recomputed
  double no_stop_token_penalty = 0.0;
  OptimizerOptions policy_optimizer;   // total_steps 0: constant learning rate after warmup
  OptimizerOptions value_optimizer;
  double policy_ema_decay = 0.0;       // 0: no EMA
  uint64_t seed = 0;                   // minibatch shuffling (combined with the step index)
};

// PPO-ptx (InstructGPT eq. (2)): language-model loss on pretraining sequences, gamma * loss added to the policy
// loss of each minibatch (the sequences are split evenly across minibatches).
struct PtxBatch {
  std::vector<std::vector<int64_t>> sequences;  // each >= 2 tokens
  double gamma = 0.0;
};

struct PpoStepStats {
  int64_t step = 0;  // 1-based, over the learner's life
  double policy_loss = 0, value_loss = 0, ptx_loss = 0;
  double mean_reward = 0, mean_total_reward = 0;
  double mean_kl = 0;  // per response, nats, with options.kl_estimator, policy before the step
  std::string kl_estimator;
  double clip_fraction = 0, value_clip_fraction = 0, approx_kl = 0, entropy = 0, explained_variance = 0;
  double advantage_mean = 0, advantage_std = 0;
  double learning_rate = 0, kl_beta = 0, next_kl_beta = 0;
  double tokens_per_second = 0, mean_response_length = 0, stop_token_fraction = 0;
  int64_t num_rollouts = 0;
  double elapsed_seconds = 0;
  // Where the time went: forward passes (rollout statistics and minibatch forwards), backward passes, optimiser.
  double forward_seconds = 0, backward_seconds = 0, optimizer_seconds = 0;
};

// The learner's scalar state; with StateTensors() the whole resumable state.
struct PpoLearnerState {
  int64_t steps = 0;
  int64_t policy_optimizer_steps = 0;
  int64_t value_optimizer_steps = 0;
  rl::KlControllerState kl;
  std::string kl_config;  // the controller settings the state belongs to (see PpoLearner::Step)
  bool has_ema = false;
};

// Thread safety: none; one trainer owns it.
class PpoLearner {
 public:
  // `policy` is the language model being trained; `value` a model with a value head (e.g. the reward model with its
  // head copied by InitValueHeadFromRewardHead). Both stay shared with the caller, who may export or save them
  // between steps.
  static absl::StatusOr<std::unique_ptr<PpoLearner>> Create(std::shared_ptr<model::CausalLm> policy,
                                                            std::shared_ptr<model::CausalLm> value);

  // One PPO iteration. InvalidArgument naming the rollout and field (rollouts[3].reference_logprobs has 5 entries,
  // the response 6 tokens) or the option; nothing changes then. The KL controller is (re)created when options.kl
  // differs from the one its state belongs to.
  absl::StatusOr<PpoStepStats> Step(const std::vector<Rollout>& rollouts, const PpoOptions& options,
                                    const PtxBatch& ptx = {});

  model::CausalLm& policy() { return *policy_; }
  model::CausalLm& value() { return *value_; }
  std::shared_ptr<model::CausalLm> shared_policy() const { return policy_; }
  std::shared_ptr<model::CausalLm> shared_value() const { return value_; }
  int64_t steps() const { return state_.steps; }
  // The coefficient the next step uses (the controller's, or the configured one before the first step).
  double beta() const;

  // EMA of the policy weights by parameter name; empty when policy_ema_decay was never set.
  const std::map<std::string, at::Tensor>& ema_weights() const { return ema_; }

  // Optimiser moments ("policy.exp_avg.<param>", "value.exp_avg_sq.<param>"...) and EMA ("ema.<param>").
  std::map<std::string, at::Tensor> StateTensors() const;
  PpoLearnerState State() const;
  // Restores StateTensors() and State() (the optimisers' options come with the next Step).
  absl::Status Restore(const std::map<std::string, at::Tensor>& tensors, const PpoLearnerState& state);

 private:
  PpoLearner(std::shared_ptr<model::CausalLm> policy, std::shared_ptr<model::CausalLm> value);
  absl::Status Prepare(const PpoOptions& options);

  std::shared_ptr<model::CausalLm> policy_, value_;
  std::unique_ptr<AdamW> policy_optimizer_, value_optimizer_;
  std::unique_ptr<rl::KlController> kl_controller_;
  std::map<std::string, at::Tensor> ema_;
  PpoLearnerState state_;
  // Restored optimiser moments, applied when the optimisers are created by the next Step.
  std::map<std::string, at::Tensor> pending_tensors_;
};

// Copies the reward head (score.weight, score.bias) into the value head of `model` (InstructGPT: the value function
// starts from the reward model). InvalidArgument unless the model has both heads.
absl::Status InitValueHeadFromRewardHead(model::CausalLm& model);

// "fixed:0.02", "adaptive:0.1:6:10000": the identity of a controller configuration.
std::string KlConfigKey(const rl::KlControllerOptions& options);

absl::Status ValidatePpoOptions(const PpoOptions& options);

}  // namespace rlhf::training

#endif  // RLHF_COMMON_TRAINING_PPO_LEARNER_H_
