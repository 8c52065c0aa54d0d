#include "services/labeling/labeling_service_impl.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/runtime/finished_reactors.h"
#include "common/runtime/status_util.h"
#include "common/util/status_macros.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"

namespace rlhf::labeling {
namespace {

using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp ToProto(absl::Time t) { return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t)); }
absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Nanoseconds(TimeUtil::DurationToNanoseconds(d));
}

grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context, const absl::Status& status) {
  return runtime::FinishUnary(context, runtime::ToGrpcStatus(status));
}

}  // namespace

absl::StatusOr<absl::Duration> NextTaskWait(const v1::NextTaskRequest& request) {
  const absl::Duration wait = FromProto(request.wait());
  if (wait < absl::ZeroDuration()) return absl::InvalidArgumentError("wait: must be >= 0");
  return wait;
}

absl::Status ValidateSubmitRanking(const v1::SubmitRankingRequest& request) {
  if (request.task_id().empty()) return absl::InvalidArgumentError("task_id: required");
  return absl::OkStatus();
}

std::vector<std::pair<std::string, int32_t>> RanksFromProto(const v1::SubmitRankingRequest& request) {
  std::vector<std::pair<std::string, int32_t>> ranks;
  for (const v1::CandidateRank& r : request.ranks()) ranks.emplace_back(r.candidate_id(), r.rank());
  return ranks;
}

NewBatch NewBatchFromProto(const v1::EnqueueTasksRequest& request) {
  NewBatch batch;
  batch.batch_id = request.batch_id();
  batch.run_id = request.run_id();
  batch.round = request.round();
  batch.instructions = request.instructions();
  batch.task_timeout = FromProto(request.task_timeout());
  for (const v1::TaskSpec& spec : request.tasks()) {
    RankingTask t;
    t.prompt = spec.prompt();
    t.responses.assign(spec.responses().begin(), spec.responses().end());
    batch.tasks.push_back(std::move(t));
  }
  return batch;
}

absl::Status ValidateBatchId(const std::string& batch_id) {
  if (batch_id.empty()) return absl::InvalidArgumentError("batch_id: required");
  return absl::OkStatus();
}

struct LabelingServiceImpl::Metrics {
  explicit Metrics(prometheus::Registry& registry)
      : tasks(prometheus::BuildGauge()
                  .Name("rlhf_labeling_tasks")
                  .Help("Labeling tasks by state (pending, assigned, completed)")
                  .Register(registry)),
        pending(tasks.Add({{"state", "pending"}})),
        assigned(tasks.Add({{"state", "assigned"}})),
        completed(tasks.Add({{"state", "completed"}})),
        rankings(prometheus::BuildCounter()
                     .Name("rlhf_labeling_rankings_total")
                     .Help("Rankings submitted")
                     .Register(registry)
                     .Add({})),
        expired(prometheus::BuildCounter()
                    .Name("rlhf_labeling_assignments_expired_total")
                    .Help("Assignments whose deadline passed unanswered (the task went back to the queue)")
                    .Register(registry)
                    .Add({})),
        answer_seconds(prometheus::BuildHistogram()
                           .Name("rlhf_labeling_answer_seconds")
                           .Help("Seconds from a task's assignment to its ranking")
                           .Register(registry)
                           .Add({}, prometheus::Histogram::BucketBoundaries{1, 5, 15, 30, 60, 120, 300, 600, 1800,
                                                                            3600})) {}

  prometheus::Family<prometheus::Gauge>& tasks;
  prometheus::Gauge& pending;
  prometheus::Gauge& assigned;
  prometheus::Gauge& completed;
  prometheus::Counter& rankings;
  prometheus::Counter& expired;
  prometheus::Histogram& answer_seconds;
};

// NextTask waits without holding a thread: the queue calls back when a task is assigned or the wait ends.
class LabelingServiceImpl::NextTaskReactor final : public grpc::ServerUnaryReactor {
 public:
  NextTaskReactor(LabelingQueue* queue, v1::LabelingTask* response) : queue_(queue), response_(response) {}

  void Start(const std::string& labeler_id, absl::Duration wait) {
    wait_id_ = queue_->Next(labeler_id, wait, [this](absl::StatusOr<AssignedTask> task) {
      if (!task.ok()) {
        Finish(runtime::ToGrpcStatus(task.status()));
        return;
      }
      response_->set_task_id(task->task_id);
      response_->set_prompt(task->prompt);
      for (const auto& [id, text] : task->candidates) {
        v1::Candidate* c = response_->add_candidates();
        c->set_candidate_id(id);
        c->set_text(text);
      }
      *response_->mutable_deadline() = ToProto(task->deadline);
      response_->set_run_id(task->run_id);
      response_->set_round(task->round);
      response_->set_instructions(task->instructions);
      Finish(grpc::Status::OK);
    });
  }

  void OnCancel() override { queue_->CancelWait(wait_id_); }
  void OnDone() override { delete this; }

 private:
  LabelingQueue* queue_;
  v1::LabelingTask* response_;
  int64_t wait_id_ = 0;
};

absl::StatusOr<std::unique_ptr<LabelingServiceImpl>> LabelingServiceImpl::Create(LabelingServiceOptions options,
                                                                                 prometheus::Registry* registry) {
  if (options.max_next_task_wait < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--max_next_task_wait must be >= 0");
  }
  std::unique_ptr<LabelingServiceImpl> service(new LabelingServiceImpl());
  service->options_ = options;
  if (registry != nullptr) service->metrics_ = std::make_unique<Metrics>(*registry);
  Metrics* metrics = service->metrics_.get();
  LabelingServiceImpl* raw = service.get();
  if (metrics != nullptr) {
    options.queue.on_change = [raw, metrics] {
      if (!raw->queue_) return;
      const QueueCounts c = raw->queue_->Counts();
      metrics->pending.Set(static_cast<double>(c.pending));
      metrics->assigned.Set(static_cast<double>(c.assigned));
      metrics->completed.Set(static_cast<double>(c.completed));
    };
    options.queue.on_expired = [metrics] { metrics->expired.Increment(); };
    options.queue.on_answered = [metrics](absl::Duration d) {
      metrics->rankings.Increment();
      metrics->answer_seconds.Observe(absl::ToDoubleSeconds(d));
    };
  }
  const auto on_change = options.queue.on_change;
  ASSIGN_OR_RETURN(service->queue_, LabelingQueue::Open(std::move(options.queue)));
  if (on_change) on_change();  // the replayed counts
  return service;
}

LabelingServiceImpl::~LabelingServiceImpl() { Shutdown(); }

void LabelingServiceImpl::Shutdown() {
  if (queue_) queue_->Close();
}

absl::StatusOr<std::string> LabelingServiceImpl::Labeler(const grpc::CallbackServerContext& context,
                                                        const std::string& requested) const {
  if (options_.authenticator == nullptr) {
    if (requested.empty()) return absl::InvalidArgumentError("labeler_id: required");
    return requested;
  }
  ASSIGN_OR_RETURN(const runtime::Identity caller, options_.authenticator->Identify(context));
  if (requested.empty() || requested == caller.name) return caller.name;
  if (caller.Has(runtime::kRoleAdmin)) return requested;  // on behalf of a labeler
  return absl::PermissionDeniedError(absl::StrCat("labeler_id: '", requested,
                                                  "' is not the caller '", caller.name,
                                                  "'; a labeler takes and answers tasks only as itself (leave "
                                                  "labeler_id empty)"));
}

grpc::ServerUnaryReactor* LabelingServiceImpl::NextTask(grpc::CallbackServerContext* context,
                                                        const v1::NextTaskRequest* request,
                                                        v1::LabelingTask* response) {
  absl::StatusOr<std::string> labeler = Labeler(*context, request->labeler_id());
  if (!labeler.ok()) return Answer(context, labeler.status());
  absl::StatusOr<absl::Duration> asked = NextTaskWait(*request);
  if (!asked.ok()) return Answer(context, asked.status());
  absl::Duration wait = std::min(*asked, options_.max_next_task_wait);
  // Answer NOT_FOUND a little before the caller's deadline rather than let the call fail with DEADLINE_EXCEEDED.
  const absl::Time call_deadline = absl::FromChrono(context->deadline());
  wait = std::max(absl::ZeroDuration(), std::min(wait, call_deadline - absl::Now() - absl::Milliseconds(50)));
  auto* reactor = new NextTaskReactor(queue_.get(), response);
  reactor->Start(*labeler, wait);
  return reactor;
}

grpc::ServerUnaryReactor* LabelingServiceImpl::SubmitRanking(grpc::CallbackServerContext* context,
                                                             const v1::SubmitRankingRequest* request,
                                                             v1::SubmitRankingResponse* response) {
  if (absl::Status valid = ValidateSubmitRanking(*request); !valid.ok()) return Answer(context, valid);
  absl::StatusOr<std::string> labeler = Labeler(*context, request->labeler_id());
  if (!labeler.ok()) return Answer(context, labeler.status());
  absl::StatusOr<int64_t> completed = queue_->Submit(request->task_id(), *labeler, RanksFromProto(*request));
  if (!completed.ok()) return Answer(context, completed.status());
  response->set_task_id(request->task_id());
  response->set_completed(*completed);
  return Answer(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* LabelingServiceImpl::GetQueueStats(grpc::CallbackServerContext* context,
                                                             const v1::GetQueueStatsRequest* request,
                                                             v1::QueueStats* response) {
  const QueueCounts c = queue_->Counts(request->run_id());
  response->set_pending(c.pending);
  response->set_assigned(c.assigned);
  response->set_completed(c.completed);
  response->set_expired(c.expired);
  *response->mutable_as_of() = ToProto(absl::Now());
  return Answer(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* LabelingServiceImpl::EnqueueTasks(grpc::CallbackServerContext* context,
                                                            const v1::EnqueueTasksRequest* request,
                                                            v1::EnqueueTasksResponse* response) {
  absl::StatusOr<BatchInfo> info = queue_->Enqueue(NewBatchFromProto(*request));
  if (!info.ok()) return Answer(context, info.status());
  for (const std::string& id : info->task_ids) response->add_task_ids(id);
  response->set_already_existed(info->already_existed);
  *response->mutable_created() = ToProto(info->created);
  return Answer(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* LabelingServiceImpl::GetRankings(grpc::CallbackServerContext* context,
                                                           const v1::GetRankingsRequest* request,
                                                           v1::GetRankingsResponse* response) {
  if (absl::Status valid = ValidateBatchId(request->batch_id()); !valid.ok()) return Answer(context, valid);
  absl::StatusOr<BatchRankings> rankings = queue_->Rankings(request->batch_id());
  if (!rankings.ok()) return Answer(context, rankings.status());
  for (const SubmittedRanking& r : rankings->rankings) {
    v1::TaskRanking* out = response->add_rankings();
    out->set_task_index(r.task_index);
    out->set_task_id(r.task_id);
    out->set_labeler_id(r.labeler_id);
    out->mutable_ranks()->Add(r.ranks.begin(), r.ranks.end());
    *out->mutable_completed_at() = ToProto(r.completed_at);
  }
  response->set_total(rankings->total);
  response->set_completed(rankings->completed);
  *response->mutable_created() = ToProto(rankings->created);
  response->set_cancelled(rankings->cancelled);
  return Answer(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* LabelingServiceImpl::CancelTasks(grpc::CallbackServerContext* context,
                                                           const v1::CancelTasksRequest* request,
                                                           v1::CancelTasksResponse* response) {
  if (absl::Status valid = ValidateBatchId(request->batch_id()); !valid.ok()) return Answer(context, valid);
  absl::StatusOr<int64_t> withdrawn = queue_->Cancel(request->batch_id());
  if (!withdrawn.ok()) return Answer(context, withdrawn.status());
  response->set_withdrawn(*withdrawn);
  return Answer(context, absl::OkStatus());
}

}  // namespace rlhf::labeling
