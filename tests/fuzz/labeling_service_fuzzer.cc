// Input: a LabelingSession (fuzz_inputs.proto, binary): labeling-service requests played in order through the
// checks the handlers run (services/labeling/labeling_service_impl.h) and a journaled queue, as the handlers do.
// Each call ends with OK or an error code its RPC documents; afterwards, the queue reopened from its journal has
// the same counts.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "common/labeling/labeling_queue.h"
#include "fuzz_inputs.pb.h"
#include "services/labeling/labeling_service_impl.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using rlhf::fuzz::Expect;
using rlhf::fuzz::ExpectOkOr;
using rlhf::fuzz::Fail;
using rlhf::labeling::AssignedTask;
using rlhf::labeling::LabelingQueue;
using rlhf::labeling::LabelingQueueOptions;
using rlhf::labeling::QueueCounts;
using Code = absl::StatusCode;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rlhf::fuzz::LabelingSession session;
  if (!session.ParseFromArray(data, static_cast<int>(size))) return 0;
  LabelingQueueOptions options;
  options.state_dir = rlhf::fuzz::FreshScratchDir("state");
  auto queue = LabelingQueue::Open(options);
  if (!queue.ok()) Fail("opening an empty queue", queue.status());
  std::vector<std::string> handed_out;  // task ids NextTask returned, for "#N"
  for (const rlhf::fuzz::LabelingCall& call : session.calls()) {
    switch (call.call_case()) {
      case rlhf::fuzz::LabelingCall::kEnqueueTasks: {
        auto info = (*queue)->Enqueue(rlhf::labeling::NewBatchFromProto(call.enqueue_tasks()));
        if (info.ok()) {
          Expect(static_cast<int>(info->task_ids.size()) == call.enqueue_tasks().tasks_size(),
                 "EnqueueTasks returned a task id count other than the tasks'");
        }
        ExpectOkOr(info.status(), "EnqueueTasks", {Code::kInvalidArgument, Code::kAlreadyExists});
        break;
      }
      case rlhf::fuzz::LabelingCall::kNextTask: {
        // Without authentication (as here) the handler requires labeler_id.
        if (call.next_task().labeler_id().empty()) break;
        auto wait = rlhf::labeling::NextTaskWait(call.next_task());
        if (!wait.ok()) {
          ExpectOkOr(wait.status(), "NextTask's checks", {Code::kInvalidArgument});
          break;
        }
        std::optional<absl::StatusOr<AssignedTask>> taken;
        (*queue)->Next(call.next_task().labeler_id(), absl::ZeroDuration(),
                       [&](absl::StatusOr<AssignedTask> task) { taken = std::move(task); });
        Expect(taken.has_value(), "NextTask with no wait did not answer at once");
        if (taken->ok()) {
          Expect((*taken)->candidates.size() >= 2, "NextTask handed out a task with fewer than 2 candidates");
          handed_out.push_back((*taken)->task_id);
        }
        ExpectOkOr(taken->status(), "NextTask", {Code::kNotFound});
        break;
      }
      case rlhf::fuzz::LabelingCall::kSubmitRanking: {
        rlhf::v1::SubmitRankingRequest request = call.submit_ranking();
        size_t n = 0;
        if (request.task_id().size() > 1 && request.task_id()[0] == '#' &&
            absl::SimpleAtoi(request.task_id().substr(1), &n) && n < handed_out.size()) {
          request.set_task_id(handed_out[n]);
        }
        if (request.labeler_id().empty()) break;  // the handler requires it without authentication
        if (absl::Status valid = rlhf::labeling::ValidateSubmitRanking(request); !valid.ok()) {
          ExpectOkOr(valid, "SubmitRanking's checks", {Code::kInvalidArgument});
          break;
        }
        auto completed =
            (*queue)->Submit(request.task_id(), request.labeler_id(), rlhf::labeling::RanksFromProto(request));
        ExpectOkOr(completed.status(), "SubmitRanking",
                   {Code::kNotFound, Code::kInvalidArgument, Code::kPermissionDenied, Code::kFailedPrecondition,
                    Code::kAlreadyExists});
        break;
      }
      case rlhf::fuzz::LabelingCall::kGetRankings: {
        if (absl::Status valid = rlhf::labeling::ValidateBatchId(call.get_rankings().batch_id()); !valid.ok()) break;
        auto rankings = (*queue)->Rankings(call.get_rankings().batch_id());
        if (rankings.ok()) {
          Expect(rankings->completed == static_cast<int64_t>(rankings->rankings.size()),
                 "GetRankings' completed count differs from the rankings it lists");
        }
        ExpectOkOr(rankings.status(), "GetRankings", {Code::kNotFound});
        break;
      }
      case rlhf::fuzz::LabelingCall::kCancelTasks: {
        if (absl::Status valid = rlhf::labeling::ValidateBatchId(call.cancel_tasks().batch_id()); !valid.ok()) break;
        ExpectOkOr((*queue)->Cancel(call.cancel_tasks().batch_id()).status(), "CancelTasks", {Code::kNotFound});
        break;
      }
      case rlhf::fuzz::LabelingCall::kGetQueueStats:
        (*queue)->Counts(call.get_queue_stats().run_id());
        break;
      case rlhf::fuzz::LabelingCall::CALL_NOT_SET:
        break;
    }
  }
  const QueueCounts before = (*queue)->Counts();
  queue->reset();
  auto reopened = LabelingQueue::Open(options);
  if (!reopened.ok()) Fail("reopening the journal of a session", reopened.status());
  const QueueCounts after = (*reopened)->Counts();
  Expect(after.completed == before.completed, "reopening changed the completed count");
  Expect(after.pending + after.assigned == before.pending + before.assigned,
         "reopening changed the count of open tasks");
  return 0;
}
