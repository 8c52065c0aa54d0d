// A programmatic labeler for the built-in task, in the spirit of AlpacaFarm's simulated annotators: it ranks
// responses by the task's true score (instructions.h) and then, to behave like people who disagree with each other
// (InstructGPT measured about 73% agreement between labelers), flips each judged pair with a fixed probability.
#ifndef RLHF_COMMON_TASK_SIMULATED_LABELER_H_
#define RLHF_COMMON_TASK_SIMULATED_LABELER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/labeling/labeler.h"
#include "common/task/instructions.h"

namespace rlhf::task {

struct SimulatedLabelerOptions {
  // Probability that a pair's preference is reversed, in [0, 0.5]. 0.25 is near InstructGPT's inter-labeler
  // agreement (72.6 +- 1.5%).
  double noise_rate = 0.25;
  uint64_t seed = 0;
  // How the responses of a task are written. The default reads them as the generation service returns them for
  // the word tokenizer (Completion.text, special tokens included): a response without "<eos>" never finished.
  ResponseForm response_form = ResponseForm::kGeneratedText;
  // Judgement::labeler_id.
  std::string labeler_id = "simulated";
};

// Judge, for each task: scores every response with ScoreResponse; for each pair i < j (in index order) of
// different scores, prefers the better one, or with probability noise_rate the worse one (independently per pair);
// equal scores are ties and give no preference. Judgement::ranks holds the ranking by score (1 best, ties share a
// rank) when noise_rate is 0 and is empty otherwise (flipped pairs need not fit any ranking).
//
// The coin flips of a task are a function of (seed, LabelingOptions::round, the task's index in the call, its
// prompt and responses), so judging the same tasks again gives the same judgements, whichever thread calls.
// Every task is answered at once (deadlines never bite). InvalidArgument naming "tasks[i]" for a task with fewer
// than 2 responses or a prompt that is not a task prompt; Cancelled when options.cancelled says so (checked
// before each task). Thread-safe: Judge keeps no state.
class SimulatedLabeler final : public labeling::Labeler {
 public:
  // InvalidArgument naming the field for a noise_rate outside [0, 0.5] or an empty labeler_id.
  static absl::StatusOr<std::unique_ptr<SimulatedLabeler>> Create(SimulatedLabelerOptions options);

  absl::StatusOr<std::vector<std::optional<labeling::Judgement>>> Judge(
      const std::vector<labeling::RankingTask>& tasks, const labeling::LabelingOptions& options) override;

  // "simulated(noise=0.25, seed=0)".
  std::string Describe() const override;

  const SimulatedLabelerOptions& options() const { return options_; }

 private:
  explicit SimulatedLabeler(SimulatedLabelerOptions options) : options_(std::move(options)) {}

  SimulatedLabelerOptions options_;
};

// Ranks by score, 1 for the best; equal scores share the rank of the first of them (scores 0, -1, 0, -3 -> 1, 3, 1,
// 4).
std::vector<int32_t> RanksFromScores(const std::vector<int32_t>& scores);

}  // namespace rlhf::task

#endif  // RLHF_COMMON_TASK_SIMULATED_LABELER_H_
