// Input: the bytes of a labeling queue's journal (<state_dir>/queue.jsonl, common/labeling/labeling_queue.h), as a
// crash or a bad disk may leave it. Open replays it: it must accept it or refuse it with DataLoss (a corrupt record)
// and never crash. An accepted queue then hands out a pending task and takes a full ranking for it, and reopening
// the directory (the compacted journal Open wrote, plus the records of those two calls) gives the same counts.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/labeling/labeling_queue.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using rlhf::fuzz::Expect;
using rlhf::fuzz::ExpectOkOr;
using rlhf::fuzz::Fail;
using rlhf::labeling::AssignedTask;
using rlhf::labeling::LabelingQueue;
using rlhf::labeling::LabelingQueueOptions;
using rlhf::labeling::QueueCounts;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = rlhf::fuzz::FreshScratchDir("state");
  rlhf::fuzz::WriteScratchFile("state/queue.jsonl", std::string(reinterpret_cast<const char*>(data), size));
  LabelingQueueOptions options;
  options.state_dir = dir;
  auto queue = LabelingQueue::Open(options);
  if (!queue.ok()) {
    ExpectOkOr(queue.status(), "LabelingQueue::Open of a journal", {absl::StatusCode::kDataLoss});
    return 0;
  }
  std::optional<absl::StatusOr<AssignedTask>> taken;
  (*queue)->Next("fuzz-labeler", absl::ZeroDuration(), [&](absl::StatusOr<AssignedTask> task) { taken = task; });
  Expect(taken.has_value(), "Next with no wait did not answer at once");
  if (taken->ok()) {
    const AssignedTask& task = **taken;
    std::vector<std::pair<std::string, int32_t>> ranks;
    for (size_t i = 0; i < task.candidates.size(); ++i) {
      ranks.emplace_back(task.candidates[i].first, static_cast<int32_t>(i + 1));
    }
    auto submitted = (*queue)->Submit(task.task_id, "fuzz-labeler", ranks);
    if (!submitted.ok()) Fail("Submit of a full ranking of the task just taken", submitted.status());
  } else {
    ExpectOkOr(taken->status(), "Next", {absl::StatusCode::kNotFound});
  }
  const QueueCounts before = (*queue)->Counts();
  queue->reset();
  auto reopened = LabelingQueue::Open(options);
  if (!reopened.ok()) Fail("reopening a journal the queue wrote itself", reopened.status());
  const QueueCounts after = (*reopened)->Counts();
  Expect(after.completed == before.completed, "reopening changed the completed count");
  // Assignments may expire in between, which moves them back to pending.
  Expect(after.pending + after.assigned == before.pending + before.assigned,
         "reopening changed the count of open tasks");
  return 0;
}
