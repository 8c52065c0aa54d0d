// The labeler interface: whoever judges sampled responses for reward-model training (a simulated labeler for the
// built-in task, another team's reward service used as a judge, or people answering a queue). The orchestrator
// picks one by RunConfig.labeler and turns its judgements into comparison records.
#ifndef RLHF_COMMON_LABELING_LABELER_H_
#define RLHF_COMMON_LABELING_LABELER_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace rlhf::labeling {

// K >= 2 responses to one prompt, to be judged together.
struct RankingTask {
  std::string prompt;  // for a chat prompt, the conversation as one text ("role: content" lines)
  std::vector<std::string> responses;
  // A chat prompt's messages as (role, content), empty otherwise: labelers that call a model (the judge) send the
  // conversation, to be rendered with that model's chat template.
  std::vector<std::pair<std::string, std::string>> messages;
};

// "responses[preferred] is better than responses[other]".
struct Preference {
  int32_t preferred = 0;
  int32_t other = 0;
};

// One labeler's judgement of one task.
struct Judgement {
  // Every ordered pair the labeler expressed (ties give none). Pairs may be inconsistent with any single ranking
  // (a noisy labeler flips pairs independently); each is one reward-model training pair.
  std::vector<Preference> preferences;
  // ranks[i] is the rank of responses[i] (1 best, equal ranks are ties) when the judgement is a consistent
  // ranking; empty otherwise.
  std::vector<int32_t> ranks;
  // Who judged ("simulated", a judge model's name, a person's labeler id).
  std::string labeler_id;
};

struct LabelingOptions {
  // Provenance, shown to human labelers.
  std::string run_id;
  int32_t round = 0;
  // Give up waiting for unanswered tasks at this time (human queues); answered ones are still returned.
  absl::Time deadline = absl::InfiniteFuture();
  // Polled while waiting; true stops early with CANCELLED.
  std::function<bool()> cancelled;
  // Called as tasks get answered: (answered so far, total).
  std::function<void(int64_t, int64_t)> progress;
};

class Labeler {
 public:
  virtual ~Labeler() = default;

  // Judges every task. result[i] answers tasks[i], or is nullopt when that task went unanswered before
  // options.deadline. InvalidArgument when a task has fewer than 2 responses (naming "tasks[i]"); Unavailable when
  // a remote labeler (judge service, queue) cannot be reached; Cancelled when options.cancelled said so.
  virtual absl::StatusOr<std::vector<std::optional<Judgement>>> Judge(const std::vector<RankingTask>& tasks,
                                                                      const LabelingOptions& options) = 0;

  // Short description for logs and reports, e.g. "simulated(noise=0.25)".
  virtual std::string Describe() const = 0;
};

// All ordered pairs implied by `ranks` (lower rank preferred; ties give no pair), in (i, j) index order.
std::vector<Preference> PreferencesFromRanks(const std::vector<int32_t>& ranks);

}  // namespace rlhf::labeling

#endif  // RLHF_COMMON_LABELING_LABELER_H_
