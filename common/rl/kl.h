// KL bookkeeping for PPO with a per-token KL penalty (InstructGPT eq. (2)): the choice of per-token KL estimator and
// the controllers of the penalty coefficient beta. This header is LibTorch-free; the estimators themselves are in
// common/rl/ppo_math.h (KlPerToken).
#ifndef RLHF_COMMON_RL_KL_H_
#define RLHF_COMMON_RL_KL_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rlhf::rl {

// Per-token estimators of KL(pi || pi_ref) from a token sampled from pi (Schulman, "Approximating KL divergence",
// 2020). With log_ratio = ref_logprob - logprob = log(pi_ref(y) / pi(y)):
//   kK1 = -log_ratio                          = logprob - ref_logprob   unbiased, can be negative, high variance
//   kK2 = 0.5 * log_ratio^2                                              biased (low when pi ~ pi_ref), >= 0
//   kK3 = (exp(log_ratio) - 1) - log_ratio                              unbiased, >= 0, low variance
// InstructGPT's per-token penalty is k1 (the sum over a response is the sampled log-ratio of the sequence).
enum class KlEstimator { kK1, kK2, kK3 };

// "k1", "k2", "k3".
absl::string_view KlEstimatorName(KlEstimator estimator);
// Inverse of KlEstimatorName (case-sensitive). InvalidArgument naming the accepted names otherwise.
absl::StatusOr<KlEstimator> ParseKlEstimator(absl::string_view name);

// Everything a controller needs to resume exactly: save it with a checkpoint, give it back to Restore.
struct KlControllerState {
  double beta = 0.0;        // the current coefficient
  int64_t total_steps = 0;  // sum of n_steps over all Update calls (episodes seen)
};

// Holds beta for the per-token KL penalty, reward_t = -beta * kl_t (+ score on the last token).
// Thread safety: none; one trainer owns a controller.
class KlController {
 public:
  virtual ~KlController() = default;

  virtual double Beta() const = 0;
  // Called once per PPO batch with `current_kl`, the batch mean of the per-response KL (the sum of the per-token
  // KL over a response, nats; e.g. the mean of PerTokenRewardsResult::kl_sum), and `n_steps`, the number of
  // episodes (responses) in the batch. InvalidArgument for a non-finite current_kl or n_steps < 0; the state is
  // unchanged then.
  virtual absl::Status Update(double current_kl, int64_t n_steps) = 0;
  virtual KlControllerState State() const = 0;
  // Replaces the state. InvalidArgument (state unchanged) for a negative or non-finite beta or total_steps < 0.
  virtual absl::Status Restore(const KlControllerState& state) = 0;
};

// A constant beta (InstructGPT: 0.02; 0.01-0.02 works best). Update only counts the steps.
class FixedKlController final : public KlController {
 public:
  // InvalidArgument unless beta is finite and >= 0.
  static absl::StatusOr<std::unique_ptr<FixedKlController>> Create(double beta);

  double Beta() const override { return beta_; }
  absl::Status Update(double current_kl, int64_t n_steps) override;
  KlControllerState State() const override { return {beta_, total_steps_}; }
  absl::Status Restore(const KlControllerState& state) override;

 private:
  explicit FixedKlController(double beta) : beta_(beta) {}

  double beta_;
  int64_t total_steps_ = 0;
};

struct AdaptiveKlOptions {
  double init_beta = 0.02;  // > 0 (a zero beta would stay zero forever)
  // Target per-response KL in nats, > 0. TRL's default is 6; the built-in task's quality peaks at 0.4-0.7 nats
  // (DESIGN.md), hence 0.5.
  double target_kl = 0.5;
  // Episodes over which a sustained error changes beta by about e^(+-0.2), > 0 (Ziegler et al.: 10000).
  double horizon = 10000.0;
};

// Ziegler et al. 2019 (Fine-Tuning Language Models from Human Preferences), sec. 2.2, as in lm-human-preferences
// and TRL's AdaptiveKLController:
//   proportional_error = clip(current_kl / target_kl - 1, -0.2, 0.2)
//   beta <- beta * (1 + proportional_error * n_steps / horizon)
class AdaptiveKlController final : public KlController {
 public:
  // The clip bound of the proportional error.
  static constexpr double kMaxProportionalError = 0.2;

  // InvalidArgument naming the field unless init_beta, target_kl and horizon are finite and > 0.
  static absl::StatusOr<std::unique_ptr<AdaptiveKlController>> Create(const AdaptiveKlOptions& options);

  double Beta() const override { return beta_; }
  absl::Status Update(double current_kl, int64_t n_steps) override;
  KlControllerState State() const override { return {beta_, total_steps_}; }
  absl::Status Restore(const KlControllerState& state) override;

  const AdaptiveKlOptions& options() const { return options_; }

 private:
  explicit AdaptiveKlController(const AdaptiveKlOptions& options) : options_(options), beta_(options.init_beta) {}

  AdaptiveKlOptions options_;
  double beta_;
  int64_t total_steps_ = 0;
};

enum class KlControlMode { kFixed, kAdaptive };
absl::string_view KlControlModeName(KlControlMode mode);  // "fixed", "adaptive"
absl::StatusOr<KlControlMode> ParseKlControlMode(absl::string_view name);

// A controller chosen by a run config.
struct KlControllerOptions {
  KlControlMode mode = KlControlMode::kFixed;
  double beta = 0.02;          // mode kFixed (InstructGPT appendix C)
  AdaptiveKlOptions adaptive;  // mode kAdaptive
};
absl::StatusOr<std::unique_ptr<KlController>> CreateKlController(const KlControllerOptions& options);

}  // namespace rlhf::rl

#endif  // RLHF_COMMON_RL_KL_H_
