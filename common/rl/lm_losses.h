// Supervised losses of InstructGPT's first two steps, also used by PPO-ptx: the response-only LM loss (SFT and the
// pretraining term of PPO-ptx) and the pairwise ranking loss of the reward model (InstructGPT eq. (1)).
// Same conventions as common/rl/ppo_math.h: masks are bool or 0/1, padded/masked positions are never read and get
// zero gradient, losses are 0-dim tensors on the inputs' device, errors are InvalidArgument naming the argument,
// no exception escapes.
#ifndef RLHF_COMMON_RL_LM_LOSSES_H_
#define RLHF_COMMON_RL_LM_LOSSES_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace rlhf::rl {

struct LmLossResult {
  at::Tensor loss;         // 0-dim: mean negative log-likelihood (nats per token), differentiable w.r.t. logits
  int64_t num_tokens = 0;  // tokens averaged over (weight for gradient accumulation across micro-batches)
};

// Mean token NLL over the tokens selected by `loss_mask`:
//   loss = -mean_{(b,t): loss_mask} log softmax(logits[b, t])[target_ids[b, t]]
// logits [B, T, V] are already aligned with their targets (logits[:, t] predicts target_ids[:, t]; for a causal
// LM pass logits[:, :-1] and ids[:, 1:]); target_ids [B, T] integer; loss_mask [B, T] selects the response tokens
// (prompt and padding masked out; InstructGPT's SFT and Huang et al.). Targets at masked positions may be anything
// (e.g. -100); targets at selected positions must be in [0, V) (InvalidArgument naming target_ids[b][t]).
// Computed in float32 at least. InvalidArgument when no token is selected.
absl::StatusOr<LmLossResult> ResponseNll(const at::Tensor& logits, const at::Tensor& target_ids,
                                         const at::Tensor& loss_mask);

struct RankingLossResult {
  at::Tensor loss;         // 0-dim, differentiable w.r.t. both score tensors
  double accuracy = 0;     // fraction of pairs with chosen > rejected; ties count 1/2
  double mean_margin = 0;  // mean of chosen - rejected
  int64_t num_pairs = 0;
};

// The reward model's loss, InstructGPT eq. (1): loss = -mean_i log sigmoid(chosen_scores[i] - rejected_scores[i])
// over N comparison pairs, chosen_scores [N] and rejected_scores [N] (InstructGPT keeps all C(K, 2) pairs of a
// prompt in one batch; the mean over pairs is its 1 / C(K, 2) factor). Numerically stable for large margins.
// InvalidArgument for N = 0 or mismatched shapes.
absl::StatusOr<RankingLossResult> PairwiseRankingLoss(const at::Tensor& chosen_scores,
                                                      const at::Tensor& rejected_scores);

}  // namespace rlhf::rl

#endif  // RLHF_COMMON_RL_LM_LOSSES_H_
