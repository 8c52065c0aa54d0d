#include "common/task/simulated_labeler.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/task/rng.h"

namespace rlhf::task {

std::vector<int32_t> RanksFromScores(const std::vector<int32_t>& scores) {
  std::vector<int32_t> ranks(scores.size(), 1);
  for (size_t i = 0; i < scores.size(); ++i) {
    for (size_t j = 0; j < scores.size(); ++j) {
      if (scores[j] > scores[i]) ++ranks[i];
    }
  }
  return ranks;
}

absl::StatusOr<std::unique_ptr<SimulatedLabeler>> SimulatedLabeler::Create(SimulatedLabelerOptions options) {
  if (!(options.noise_rate >= 0.0 && options.noise_rate <= 0.5)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "noise_rate=", options.noise_rate, " is outside [0, 0.5] (above 0.5 the labeler prefers worse responses)"));
  }
  if (options.labeler_id.empty()) return absl::InvalidArgumentError("labeler_id is empty");
  return std::unique_ptr<SimulatedLabeler>(new SimulatedLabeler(std::move(options)));
}

absl::StatusOr<std::vector<std::optional<labeling::Judgement>>> SimulatedLabeler::Judge(
    const std::vector<labeling::RankingTask>& tasks, const labeling::LabelingOptions& options) {
  std::vector<std::optional<labeling::Judgement>> judgements;
  judgements.reserve(tasks.size());
  for (size_t t = 0; t < tasks.size(); ++t) {
    if (options.cancelled && options.cancelled()) {
      return absl::CancelledError(absl::StrCat("labeling cancelled after ", t, " of ", tasks.size(), " tasks"));
    }
    const labeling::RankingTask& task = tasks[t];
    if (task.responses.size() < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("tasks[", t, "] has ", task.responses.size(), " response(s); a ranking needs at least 2"));
    }
    absl::StatusOr<Instruction> instruction = ParsePrompt(task.prompt);
    if (!instruction.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("tasks[", t, "].prompt: ", instruction.status().message()));
    }
    std::vector<int32_t> scores;
    uint64_t content = internal::Fnv1a64(task.prompt);
    for (const std::string& response : task.responses) {
      scores.push_back(ScoreResponse(*instruction, ParseResponse(response, options_.response_form)));
      content = internal::MixSeed({content, internal::Fnv1a64(response)});
    }
    internal::Rng rng(internal::MixSeed({options_.seed, static_cast<uint64_t>(options.round), t, content}));
    labeling::Judgement judgement;
    judgement.labeler_id = options_.labeler_id;
    const int32_t k = static_cast<int32_t>(scores.size());
    for (int32_t i = 0; i < k; ++i) {
      for (int32_t j = i + 1; j < k; ++j) {
        if (scores[i] == scores[j]) continue;
        int32_t better = scores[i] > scores[j] ? i : j;
        int32_t worse = better == i ? j : i;
        if (rng.Bernoulli(options_.noise_rate)) std::swap(better, worse);
        judgement.preferences.push_back({better, worse});
      }
    }
    if (options_.noise_rate == 0.0) judgement.ranks = RanksFromScores(scores);
    judgements.push_back(std::move(judgement));
    if (options.progress) options.progress(static_cast<int64_t>(t + 1), static_cast<int64_t>(tasks.size()));
  }
  return judgements;
}

std::string SimulatedLabeler::Describe() const {
  return absl::StrFormat("simulated(noise=%g, seed=%d)", options_.noise_rate, options_.seed);
}

}  // namespace rlhf::task
