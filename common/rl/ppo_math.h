// The tensor math of PPO for RLHF (InstructGPT, Ouyang et al. 2022; "The N implementation details of RLHF with
// PPO", Huang et al.): per-token KL-penalised rewards, GAE, masked statistics and whitening, the clipped policy and
// value losses, entropy and explained variance. Pure functions, no state.
//
// Conventions shared by every function:
//   - Shapes: B = batch (responses), T = response positions, V = vocabulary. Per-token tensors are [B, T] and
//     aligned: position t of every argument refers to the same response token.
//   - `mask` [B, T] marks valid response tokens: bool, or any real dtype holding only 0 and 1 (anything else is
//     InvalidArgument). Responses have different lengths; padding may be anywhere (right padding is usual).
//     Padded positions are never read: they may hold any value (even NaN or inf), they get exactly zero gradient,
//     and outputs hold 0 there unless said otherwise.
//   - Means are token means over all valid tokens of the whole [B, T] batch (a minibatch in PPO), as in TRL's
//     masked_mean, not a mean of per-sequence means: every token weighs the same, long responses weigh more.
//   - Outputs live on the inputs' device (all tensor arguments must share one device) in the dtype of the first
//     floating-point argument. Losses are 0-dim tensors differentiable with respect to the "new" input; the other
//     inputs (old log-probs, advantages, returns...) are treated as constants (detached).
//   - Errors: InvalidArgument naming the argument for wrong shapes, dtypes, devices, masks and hyper-parameters;
//     InternalError for a failure inside LibTorch. No exception escapes.
#ifndef RLHF_COMMON_RL_PPO_MATH_H_
#define RLHF_COMMON_RL_PPO_MATH_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/rl/kl.h"

namespace rlhf::rl {

// ---------------------------------------------------------------------------------------------------------------
// KL and rewards

// Per-token KL estimate [B, T] of KL(pi || pi_ref) (see KlEstimator) from `logprobs` [B, T] (log pi of the sampled
// tokens, the sampling/policy log-probs) and `ref_logprobs` [B, T] (log pi_ref of the same tokens); 0 at padding.
// Differentiable with respect to both.
absl::StatusOr<at::Tensor> KlPerToken(const at::Tensor& logprobs, const at::Tensor& ref_logprobs,
                                      const at::Tensor& mask, KlEstimator estimator);

struct PerTokenRewardsOptions {
  double kl_beta = 0.02;                       // beta >= 0 (InstructGPT appendix C: 0.02)
  KlEstimator kl_estimator = KlEstimator::kK1;  // InstructGPT's log-ratio
  // Added to the reward-model score of every response that never emitted the stop token (Huang et al.: e.g. -1;
  // TRL's missing_eos_penalty). 0 disables it. Must be finite.
  double missing_stop_penalty = 0.0;
};

struct PerTokenRewardsResult {
  at::Tensor rewards;     // [B, T]: -beta * kl[b, t] on valid tokens, + score[b] on the last valid token; 0 at padding
  at::Tensor kl;          // [B, T]: the per-token KL estimate; 0 at padding
  at::Tensor kl_sum;      // [B]: sum of kl over each response's valid tokens (nats; what a KL controller wants)
  at::Tensor scores;      // [B]: the scores as added, i.e. after the missing-stop penalty
  at::Tensor last_index;  // [B] int64: the position of each row's last valid token
};

// The per-token rewards of PPO's objective, InstructGPT eq. (2): r(x, y) - beta * log(pi_RL(y|x) / pi_SFT(y|x)),
// the KL term spread over the tokens and the reward-model score given at the end of the response.
//   logprobs [B, T]      log-probs of the sampled response tokens under the sampling policy
//   ref_logprobs [B, T]  log-probs of the same tokens under the frozen reference (SFT) model
//   scores [B]           reward-model scores
//   mask [B, T]          valid response tokens; every row needs at least one (its last token carries the score)
//   emitted_stop [B]     bool, whether each response ended with the stop token; an undefined tensor means all did
// All outputs are detached (they are targets for PPO, not part of its graph).
absl::StatusOr<PerTokenRewardsResult> PerTokenRewards(const at::Tensor& logprobs, const at::Tensor& ref_logprobs,
                                                      const at::Tensor& scores, const at::Tensor& mask,
                                                      const at::Tensor& emitted_stop,
                                                      const PerTokenRewardsOptions& options);

// ---------------------------------------------------------------------------------------------------------------
// Advantages

struct GaeOptions {
  double gamma = 1.0;    // discount, in [0, 1] (InstructGPT/Huang et al.: 1)
  double lambda = 0.95;  // GAE lambda, in [0, 1]
};

struct GaeResult {
  at::Tensor advantages;  // [B, T], 0 at padding
  at::Tensor returns;     // [B, T] = advantages + values (the value targets), 0 at padding
};

// Generalised advantage estimation, Schulman et al. 2016 ("High-dimensional continuous control using GAE"),
// eq. (16) with the TD residual of eq. (10), computed backwards per row:
//   delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = delta_t + gamma * lambda * A_{t+1}
// where t+1 is the next valid position of the row (padding is skipped) and V = A = 0 after the last valid token:
// the episode ends with the response, nothing is bootstrapped. rewards and values [B, T] are taken as constants
// (the outputs carry no gradient); the recursion runs in float64 on the CPU.
absl::StatusOr<GaeResult> ComputeGae(const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& mask,
                                     const GaeOptions& options);

// ---------------------------------------------------------------------------------------------------------------
// Masked statistics (any shape: `x` and `mask` must have the same shape). Differentiable; 0-dim results.

// Mean of x over the valid entries. InvalidArgument if there are none.
absl::StatusOr<at::Tensor> MaskedMean(const at::Tensor& x, const at::Tensor& mask);
// Variance of x over the valid entries n, divided by n - 1 (unbiased, TRL's masked_var default; needs n >= 2) or by
// n (needs n >= 1).
absl::StatusOr<at::Tensor> MaskedVar(const at::Tensor& x, const at::Tensor& mask, bool unbiased = true);

// The epsilon under the square root of Whiten (TRL's masked_whiten).
inline constexpr double kWhitenEpsilon = 1e-8;

// TRL's masked_whiten: (x - mean) / sqrt(var + kWhitenEpsilon) over the valid entries, with the unbiased variance;
// with shift_mean = false the mean is added back (for rewards: rescale without re-centring). Padded entries are
// returned unchanged (not zeroed; as an identity, also for the gradient) and do not enter the statistics. Needs at
// least 2 valid entries. Used on advantages per minibatch (Huang et al.).
absl::StatusOr<at::Tensor> Whiten(const at::Tensor& x, const at::Tensor& mask, bool shift_mean = true);

// ---------------------------------------------------------------------------------------------------------------
// Losses

struct PolicyLossOptions {
  double clip_range = 0.2;  // epsilon of PPO's clip, > 0 (InstructGPT: 0.2)
};

struct PolicyLossResult {
  at::Tensor loss;             // 0-dim, differentiable w.r.t. new_logprobs: -L^CLIP, token mean
  double clip_fraction = 0;    // fraction of valid tokens where the clipped term is the one taken (TRL's pg_clipfrac)
  // Estimates of KL(pi_old || pi_new) over valid tokens, with log_ratio = new - old and ratio = exp(log_ratio):
  double approx_kl = 0;        // k2: 0.5 * mean(log_ratio^2) (TRL's approxkl)
  double approx_kl_k3 = 0;     // k3: mean((ratio - 1) - log_ratio), unbiased and >= 0
  double ratio_mean = 0;       // statistics of ratio = pi_new / pi_old over valid tokens
  double ratio_min = 0;
  double ratio_max = 0;
  int64_t num_tokens = 0;      // valid tokens averaged over
};

// PPO's clipped surrogate, Schulman et al. 2017 eq. (7), as a loss to minimise:
//   ratio_t = exp(new_logprobs_t - old_logprobs_t)
//   loss = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps, 1 + eps))     (token mean over valid tokens)
// new_logprobs [B, T] (the policy being trained; recomputed with the sampling temperature), old_logprobs [B, T]
// (at sampling time), advantages [B, T] (usually whitened per minibatch), mask [B, T]. Where the clipped term is
// taken the gradient is exactly zero.
absl::StatusOr<PolicyLossResult> ClippedPolicyLoss(const at::Tensor& new_logprobs, const at::Tensor& old_logprobs,
                                                   const at::Tensor& advantages, const at::Tensor& mask,
                                                   const PolicyLossOptions& options);

struct ValueLossOptions {
  double clip_range = 0.2;  // values may move at most this far from old_values before the clipped error applies, > 0
                            // (may be +inf: no clipping)
};

struct ValueLossResult {
  at::Tensor loss;           // 0-dim, differentiable w.r.t. new_values
  double clip_fraction = 0;  // fraction of valid tokens where the clipped error is the one taken (TRL's vf_clipfrac)
  int64_t num_tokens = 0;
};

// PPO2/TRL's clipped value loss:
//   v_clipped = old + clip(new - old, -eps_v, eps_v)
//   loss = 0.5 * mean_t max((new_t - R_t)^2, (v_clipped_t - R_t)^2)     (token mean over valid tokens)
// new_values [B, T], old_values [B, T] (at rollout time), returns [B, T] (GaeResult::returns), mask [B, T].
absl::StatusOr<ValueLossResult> ClippedValueLoss(const at::Tensor& new_values, const at::Tensor& old_values,
                                                 const at::Tensor& returns, const at::Tensor& mask,
                                                 const ValueLossOptions& options);

// ---------------------------------------------------------------------------------------------------------------
// Diagnostics

// Mean over valid tokens of the entropy of softmax(logits) (nats), logits [B, T, V] (divide by the sampling
// temperature first if that is the distribution of interest), mask [B, T]. -inf logits (banned tokens) are
// fine. Differentiable (usable as an entropy bonus).
absl::StatusOr<at::Tensor> Entropy(const at::Tensor& logits, const at::Tensor& mask);

// 1 - Var(returns - values) / Var(returns) over valid tokens of values and returns [B, T]: 1 is a perfect value
// function, 0 no better than a constant, negative worse. NaN when returns are constant (as in Stable-Baselines3).
absl::StatusOr<double> ExplainedVariance(const at::Tensor& values, const at::Tensor& returns, const at::Tensor& mask);

}  // namespace rlhf::rl

#endif  // RLHF_COMMON_RL_PPO_MATH_H_
