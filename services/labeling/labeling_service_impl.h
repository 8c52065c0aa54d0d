// rlhf.v1.LabelingService: gRPC handlers over a LabelingQueue (common/labeling/labeling_queue.h), and its metrics:
//   rlhf_labeling_tasks{state="pending|assigned|completed"}  gauge: tasks by state
//   rlhf_labeling_rankings_total                             counter: rankings submitted
//   rlhf_labeling_assignments_expired_total                  counter: assignments whose deadline passed unanswered
//   rlhf_labeling_answer_seconds                             histogram: time from assignment to submission
#ifndef RLHF_SERVICES_LABELING_LABELING_SERVICE_IMPL_H_
#define RLHF_SERVICES_LABELING_LABELING_SERVICE_IMPL_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/labeling/labeling_queue.h"
#include "common/runtime/auth.h"
#include "prometheus/registry.h"
#include "rlhf/v1/labeling.grpc.pb.h"

namespace rlhf::labeling {

namespace v1 = ::rlhf::v1;

struct LabelingServiceOptions {
  LabelingQueueOptions queue;  // its callbacks are set by the service
  // Longest a NextTask call waits for a task, whatever it asks.
  absl::Duration max_next_task_wait = absl::Seconds(60);
  // The server's authenticator (ServerOptions.security.authenticator). Set: a labeler is the authenticated caller,
  // whatever the request's labeler_id says (empty or the caller's own name; another name is PERMISSION_DENIED unless
  // the caller is admin, who may label on behalf of anyone). Null: the server does not authenticate, and labeler_id
  // is required and taken as given.
  std::shared_ptr<const runtime::Authenticator> authenticator;
};

// The handlers' own checks and conversions, run before the queue's (which check the rest): plain functions, so that
// the fuzz target (tests/fuzz/labeling_service_fuzzer.cc) runs exactly what the handlers run. The labeler is the
// caller's identity, checked by the handlers against labeler_id (without authentication labeler_id is required).
// NextTask: InvalidArgument for a negative wait; else the wait asked for (before the service's cap).
absl::StatusOr<absl::Duration> NextTaskWait(const v1::NextTaskRequest& request);
// SubmitRanking: InvalidArgument for an empty task_id.
absl::Status ValidateSubmitRanking(const v1::SubmitRankingRequest& request);
// SubmitRanking's ranks as the queue takes them: (candidate_id, rank) in request order.
std::vector<std::pair<std::string, int32_t>> RanksFromProto(const v1::SubmitRankingRequest& request);
// EnqueueTasks' batch as the queue takes it.
NewBatch NewBatchFromProto(const v1::EnqueueTasksRequest& request);
// GetRankings and CancelTasks: InvalidArgument for an empty batch_id.
absl::Status ValidateBatchId(const std::string& batch_id);

class LabelingServiceImpl final : public v1::LabelingService::CallbackService {
 public:
  // Opens the queue (replaying its journal); registers the metrics on `registry` when it is not null.
  static absl::StatusOr<std::unique_ptr<LabelingServiceImpl>> Create(LabelingServiceOptions options,
                                                                      prometheus::Registry* registry);
  ~LabelingServiceImpl() override;

  // Ends waiting NextTask calls with UNAVAILABLE (call when draining).
  void Shutdown();

  grpc::ServerUnaryReactor* NextTask(grpc::CallbackServerContext* context, const v1::NextTaskRequest* request,
                                     v1::LabelingTask* response) override;
  grpc::ServerUnaryReactor* SubmitRanking(grpc::CallbackServerContext* context, const v1::SubmitRankingRequest* request,
                                          v1::SubmitRankingResponse* response) override;
  grpc::ServerUnaryReactor* GetQueueStats(grpc::CallbackServerContext* context, const v1::GetQueueStatsRequest* request,
                                          v1::QueueStats* response) override;
  grpc::ServerUnaryReactor* EnqueueTasks(grpc::CallbackServerContext* context, const v1::EnqueueTasksRequest* request,
                                         v1::EnqueueTasksResponse* response) override;
  grpc::ServerUnaryReactor* GetRankings(grpc::CallbackServerContext* context, const v1::GetRankingsRequest* request,
                                        v1::GetRankingsResponse* response) override;
  grpc::ServerUnaryReactor* CancelTasks(grpc::CallbackServerContext* context, const v1::CancelTasksRequest* request,
                                        v1::CancelTasksResponse* response) override;

 private:
  struct Metrics;
  class NextTaskReactor;
  LabelingServiceImpl() = default;

  // Who labels in this call: see LabelingServiceOptions::authenticator.
  absl::StatusOr<std::string> Labeler(const grpc::CallbackServerContext& context, const std::string& requested) const;

  LabelingServiceOptions options_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<LabelingQueue> queue_;
};

}  // namespace rlhf::labeling

#endif  // RLHF_SERVICES_LABELING_LABELING_SERVICE_IMPL_H_
