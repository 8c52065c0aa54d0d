// A labeler that asks another reward model (a RewardScoringService, e.g. a bigger model another team runs) to judge:
// it scores every response, prefers the higher score in each pair (equal scores tie), and flips each pair with
// probability noise_rate, seeded, to simulate disagreeing people.
#ifndef RLHF_COMMON_LABELING_JUDGE_LABELER_H_
#define RLHF_COMMON_LABELING_JUDGE_LABELER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/labeling/labeler.h"
#include "common/runtime/client.h"

namespace rlhf::labeling {

struct JudgeLabelerOptions {
  runtime::ClientOptions client;  // target = the judge's address
  double noise_rate = 0.0;        // in [0, 0.5]
  uint64_t seed = 0;
  int32_t max_items_per_call = 256;
  absl::Duration call_timeout = absl::Seconds(120);
};

class JudgeLabeler final : public Labeler {
 public:
  // InvalidArgument naming the field for an empty address or a noise_rate outside [0, 0.5].
  static absl::StatusOr<std::unique_ptr<JudgeLabeler>> Create(const JudgeLabelerOptions& options);
  ~JudgeLabeler() override;

  // Unavailable naming the judge's address when it cannot be reached; the judge's errors otherwise, prefixed.
  absl::StatusOr<std::vector<std::optional<Judgement>>> Judge(const std::vector<RankingTask>& tasks,
                                                              const LabelingOptions& options) override;
  // "judge(127.0.0.1:50053 reward v3, noise=0.25)".
  std::string Describe() const override;

 private:
  struct Impl;
  explicit JudgeLabeler(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The judgement of scores: every pair of different scores, the higher preferred, each flipped with probability
// noise_rate drawn from a generator seeded with (seed, round, task index). ranks filled when noise_rate is 0.
Judgement JudgementFromScores(const std::vector<float>& scores, double noise_rate, uint64_t seed, int32_t round,
                              int64_t task_index, const std::string& labeler_id);

}  // namespace rlhf::labeling

#endif  // RLHF_COMMON_LABELING_JUDGE_LABELER_H_
