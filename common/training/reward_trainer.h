// Reward-model training (InstructGPT step 2): the scalar head on the last token, trained on every ordered pair of a
// prompt's ranked responses, all pairs of one prompt in one batch, with loss -mean log sigmoid(r(x, y_w) - r(x, y_l))
// (InstructGPT eq. (1)); then the normalisation: score.bias is set so that the SFT demonstrations score 0 on
// average.
#ifndef RLHF_COMMON_TRAINING_REWARD_TRAINER_H_
#define RLHF_COMMON_TRAINING_REWARD_TRAINER_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/causal_lm.h"
#include "common/training/batch.h"
#include "common/training/events.h"
#include "common/training/optimizer.h"

namespace rlhf::training {

// One prompt's responses and the pairs a labeler expressed: (winner, loser) indices into `responses`.
struct ComparisonGroup {
  std::vector<int64_t> prompt;                   // non-empty
  std::vector<std::vector<int64_t>> responses;   // K >= 2 (a response may be empty: the policy stopped at once)
  std::vector<std::pair<int32_t, int32_t>> pairs;  // non-empty
};

struct RewardTrainingOptions {
  int32_t epochs = 1;               // InstructGPT: 1 (more overfits)
  int32_t prompts_per_batch = 64;   // InstructGPT: 64 prompts, each with all its pairs
  OptimizerOptions optimizer;       // total_steps 0: computed from epochs
  uint64_t seed = 0;                // shuffling
  int32_t eval_interval_steps = 0;  // validation every N steps; 0: at the end of each epoch
  int32_t max_sequences_per_forward = 256;  // a batch's prompts are split into forwards of at most this many rows
};

struct PairwiseMetrics {
  double loss = 0;      // mean over pairs
  double accuracy = 0;  // fraction of pairs ordered right (ties count 1/2)
  int64_t pairs = 0;
};

struct RewardTrainingResult {
  int64_t steps = 0;
  std::map<std::string, double> metrics;  // final train/loss, train/accuracy, val/loss, val/accuracy
};

// Trains the reward head and the transformer of `model` (which must have a reward head) in place; eval mode at the
// end. Dropout is off. InvalidArgument for empty data or a malformed group (naming train[i] / validation[i]).
absl::StatusOr<RewardTrainingResult> TrainRewardModel(model::CausalLm& model, const std::vector<ComparisonGroup>& train,
                                                      const std::vector<ComparisonGroup>& validation,
                                                      const RewardTrainingOptions& options,
                                                      const ProgressSink& progress);

// Loss and pairwise accuracy of `model` on `groups`, no gradient.
absl::StatusOr<PairwiseMetrics> EvaluatePairs(const model::CausalLm& model, const std::vector<ComparisonGroup>& groups,
                                              int32_t max_sequences_per_forward = 256);

// Reward-head scores of prompt + response sequences (score.bias included), no gradient.
absl::StatusOr<std::vector<float>> ScoreSequences(const model::CausalLm& model,
                                                  const std::vector<PromptResponse>& sequences,
                                                  int32_t batch_size = 128);

// InstructGPT's normalisation: shifts score.bias so that `demonstrations` score 0 on average. Returns the new bias.
// InvalidArgument for no demonstrations or a model without a reward head.
absl::StatusOr<double> NormalizeRewardModel(model::CausalLm& model, const std::vector<PromptResponse>& demonstrations);

// The current score.bias (the normalisation bias).
absl::StatusOr<double> RewardBias(const model::CausalLm& model);

}  // namespace rlhf::training

#endif  // RLHF_COMMON_TRAINING_REWARD_TRAINER_H_
