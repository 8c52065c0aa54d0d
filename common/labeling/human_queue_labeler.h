// A labeler made of people: the tasks go to a LabelingService queue as one batch, people take them (NextTask) and
// rank them (SubmitRanking), and this labeler polls the answers (GetRankings) until it has enough.
//
// The batch is named "<run_id>/round-<round>" and queuing it again finds the same batch, so a producer that restarts
// neither queues its tasks twice nor restarts the max_wait clock. Once the rankings needed are in, the rest of the
// batch is withdrawn (CancelTasks), so people stop getting tasks nobody will read.
#ifndef RLHF_COMMON_LABELING_HUMAN_QUEUE_LABELER_H_
#define RLHF_COMMON_LABELING_HUMAN_QUEUE_LABELER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/labeling/labeler.h"
#include "common/runtime/client.h"

namespace rlhf::labeling {

struct HumanQueueLabelerOptions {
  runtime::ClientOptions client;                     // target = the LabelingService's address
  absl::Duration task_timeout = absl::ZeroDuration();  // per assignment; 0: the service's --task_timeout
  int64_t min_completed = 0;                         // rankings needed; 0 (or more than the tasks): all
  absl::Duration max_wait = absl::ZeroDuration();    // from when the batch was first queued; 0: forever
  std::string instructions;                          // shown with every task
  absl::Duration poll_interval = absl::Seconds(1);
  absl::Duration call_timeout = absl::Seconds(30);
  // How long the service may stay unreachable while waiting before Judge fails with Unavailable.
  absl::Duration unavailable_grace = absl::Minutes(10);
};

class HumanQueueLabeler final : public Labeler {
 public:
  // InvalidArgument naming the field for an empty address or a negative count or duration.
  static absl::StatusOr<std::unique_ptr<HumanQueueLabeler>> Create(const HumanQueueLabelerOptions& options);
  ~HumanQueueLabeler() override;

  // Waits for the rankings: result[i] is nullopt for a task left unanswered. DeadlineExceeded (naming max_wait and
  // the counts) when max_wait passes first, and the batch is withdrawn; at options.deadline, what is answered is
  // returned. Cancelled when options.cancelled says so (the batch stays queued for a resumed run). Unavailable when
  // the service stays unreachable for unavailable_grace.
  absl::StatusOr<std::vector<std::optional<Judgement>>> Judge(const std::vector<RankingTask>& tasks,
                                                              const LabelingOptions& options) override;
  // "human_queue(127.0.0.1:50055)".
  std::string Describe() const override;

 private:
  struct Impl;
  explicit HumanQueueLabeler(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rlhf::labeling

#endif  // RLHF_COMMON_LABELING_HUMAN_QUEUE_LABELER_H_
