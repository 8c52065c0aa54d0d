#include "common/labeling/human_queue_labeler.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/runtime/logging.h"
#include "common/runtime/status_util.h"
#include "common/util/status_macros.h"
#include "rlhf/v1/labeling.grpc.pb.h"

namespace rlhf::labeling {
namespace {

using google::protobuf::util::TimeUtil;

bool Transient(const absl::Status& s) { return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s); }

}  // namespace

struct HumanQueueLabeler::Impl {
  HumanQueueLabelerOptions options;
  std::unique_ptr<v1::LabelingService::Stub> stub;

  template <typename Request, typename Response>
  absl::Status Call(grpc::Status (v1::LabelingService::Stub::*method)(grpc::ClientContext*, const Request&, Response*),
                    const Request& request, Response* response) {
    auto context = runtime::ContextWithTimeout(options.call_timeout);
    return runtime::FromGrpcStatus(((*stub).*method)(context.get(), request, response));
  }

  absl::Status Prefixed(const absl::Status& s, const char* method) const {
    return absl::Status(s.code(), absl::StrCat("labeling service at ", options.client.target, ": ", method, ": ",
                                               s.message()));
  }
};

HumanQueueLabeler::HumanQueueLabeler(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HumanQueueLabeler::~HumanQueueLabeler() = default;

absl::StatusOr<std::unique_ptr<HumanQueueLabeler>> HumanQueueLabeler::Create(const HumanQueueLabelerOptions& options) {
  if (options.client.target.empty()) {
    return absl::InvalidArgumentError("services.labeling: the labeling service's address is required");
  }
  if (options.min_completed < 0) return absl::InvalidArgumentError("labeler.human_queue.min_completed must be >= 0");
  if (options.task_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("labeler.human_queue.task_timeout must be >= 0");
  }
  if (options.max_wait < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("labeler.human_queue.max_wait must be >= 0");
  }
  if (options.poll_interval <= absl::ZeroDuration()) return absl::InvalidArgumentError("poll_interval must be > 0");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = runtime::MakeChannel(options.client);
  if (!channel.ok()) return channel.status();
  impl->stub = v1::LabelingService::NewStub(*channel);
  return std::unique_ptr<HumanQueueLabeler>(new HumanQueueLabeler(std::move(impl)));
}

std::string HumanQueueLabeler::Describe() const {
  return absl::StrCat("human_queue(", impl_->options.client.target, ")");
}

absl::StatusOr<std::vector<std::optional<Judgement>>> HumanQueueLabeler::Judge(const std::vector<RankingTask>& tasks,
                                                                               const LabelingOptions& options) {
  for (size_t i = 0; i < tasks.size(); ++i) {
    if (tasks[i].responses.size() < 2) {
      return absl::InvalidArgumentError(absl::StrCat("tasks[", i, "]: needs at least 2 responses"));
    }
  }
  std::vector<std::optional<Judgement>> out(tasks.size());
  if (tasks.empty()) return out;
  const HumanQueueLabelerOptions& o = impl_->options;
  auto log = runtime::Logger("labeling");
  const std::string batch_id =
      absl::StrCat(options.run_id.empty() ? "run" : options.run_id, "/round-", options.round);
  const auto cancelled = [&] { return options.cancelled && options.cancelled(); };

  v1::EnqueueTasksRequest enqueue;
  enqueue.set_batch_id(batch_id);
  enqueue.set_run_id(options.run_id);
  enqueue.set_round(options.round);
  enqueue.set_instructions(o.instructions);
  *enqueue.mutable_task_timeout() = TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(o.task_timeout));
  for (const RankingTask& t : tasks) {
    v1::TaskSpec* spec = enqueue.add_tasks();
    spec->set_prompt(t.prompt);
    for (const std::string& r : t.responses) spec->add_responses(r);
  }

  // Every call is retried while the service is unreachable, up to unavailable_grace in a row.
  absl::Time unreachable_since = absl::InfiniteFuture();
  const auto retry = [&](const absl::Status& s, const char* method) -> absl::Status {
    if (!Transient(s)) return impl_->Prefixed(s, method);
    const absl::Time now = absl::Now();
    if (unreachable_since == absl::InfiniteFuture()) unreachable_since = now;
    if (now - unreachable_since > o.unavailable_grace) {
      return absl::UnavailableError(absl::StrCat("labeling service at ", o.client.target, " unreachable for ",
                                                 absl::FormatDuration(now - unreachable_since), ": ", s.message()));
    }
    log->warn("labeling service unreachable, retrying target={} method={} error={}", o.client.target, method,
              std::string(s.message()));
    return absl::OkStatus();
  };
  const auto sleep = [&] {
    const absl::Time until = absl::Now() + o.poll_interval;
    while (absl::Now() < until && !cancelled()) absl::SleepFor(std::min(o.poll_interval, absl::Milliseconds(100)));
  };

  v1::EnqueueTasksResponse queued;
  while (true) {
    if (cancelled()) return absl::CancelledError("the run was cancelled");
    absl::Status s = impl_->Call(&v1::LabelingService::Stub::EnqueueTasks, enqueue, &queued);
    if (s.ok()) break;
    RETURN_IF_ERROR(retry(s, "EnqueueTasks"));
    sleep();
  }
  unreachable_since = absl::InfiniteFuture();
  const absl::Time created = absl::FromUnixNanos(TimeUtil::TimestampToNanoseconds(queued.created()));
  const int64_t total = static_cast<int64_t>(tasks.size());
  const int64_t needed = o.min_completed > 0 ? std::min(o.min_completed, total) : total;
  log->info("queued ranking tasks batch={} tasks={} needed={} resumed={}", batch_id, total, needed,
            queued.already_existed());

  v1::GetRankingsRequest read;
  read.set_batch_id(batch_id);
  v1::GetRankingsResponse answers;
  int64_t reported = -1;
  bool withdrawn = false;
  while (true) {
    if (cancelled()) return absl::CancelledError("the run was cancelled");
    absl::Status s = impl_->Call(&v1::LabelingService::Stub::GetRankings, read, &answers);
    if (!s.ok()) {
      RETURN_IF_ERROR(retry(s, "GetRankings"));
      sleep();
      continue;
    }
    unreachable_since = absl::InfiniteFuture();
    if (answers.completed() != reported) {
      reported = answers.completed();
      if (options.progress) options.progress(answers.completed(), total);
    }
    const absl::Time now = absl::Now();
    const bool enough = answers.completed() >= needed;
    const bool out_of_time = o.max_wait > absl::ZeroDuration() && now > created + o.max_wait;
    if (enough || out_of_time || now >= options.deadline || answers.cancelled()) {
      if (answers.completed() < total && !answers.cancelled() && !withdrawn) {
        v1::CancelTasksRequest cancel;
        cancel.set_batch_id(batch_id);
        v1::CancelTasksResponse cancelled_tasks;
        absl::Status c = impl_->Call(&v1::LabelingService::Stub::CancelTasks, cancel, &cancelled_tasks);
        if (!c.ok()) {
          RETURN_IF_ERROR(retry(c, "CancelTasks"));
          sleep();
          continue;
        }
        withdrawn = true;
        log->info("withdrew unanswered tasks batch={} withdrawn={}", batch_id, cancelled_tasks.withdrawn());
        continue;  // read once more: answers that arrived before the withdrawal count
      }
      if (!enough && answers.cancelled() && !withdrawn) {
        return absl::FailedPreconditionError(
            absl::StrFormat("batch %s at %s was withdrawn (CancelTasks) with %d of the %d rankings needed", batch_id,
                            o.client.target, answers.completed(), needed));
      }
      if (!enough && out_of_time) {
        return absl::DeadlineExceededError(absl::StrFormat(
            "labeler.human_queue.max_wait: %d of the %d rankings needed arrived within %s of queuing batch %s at %s",
            answers.completed(), needed, absl::FormatDuration(o.max_wait), batch_id, o.client.target));
      }
      break;
    }
    sleep();
  }
  for (const v1::TaskRanking& r : answers.rankings()) {
    if (r.task_index() < 0 || r.task_index() >= total ||
        r.ranks_size() != static_cast<int>(tasks[r.task_index()].responses.size())) {
      return absl::DataLossError(absl::StrCat("labeling service at ", o.client.target, ": ranking of task ",
                                              r.task_id(), " does not match the task queued"));
    }
    Judgement j;
    j.ranks.assign(r.ranks().begin(), r.ranks().end());
    j.preferences = PreferencesFromRanks(j.ranks);
    j.labeler_id = r.labeler_id();
    out[r.task_index()] = std::move(j);
  }
  return out;
}

}  // namespace rlhf::labeling
