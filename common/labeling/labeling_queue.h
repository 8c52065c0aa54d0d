// The queue behind the labeling service: batches of ranking tasks that people take one at a time (Next), answer
// (Submit) or let expire, and that producers read back (Rankings) or withdraw (Cancel).
//
// Durability: with a state directory, every batch, ranking and withdrawal is appended to <state_dir>/queue.jsonl and
// fsynced before the call returns, so an answer a labeler was told is recorded survives kill -9. Assignments are
// journaled without fsync (losing one only re-offers its task). An append is all or nothing as replay sees it: one
// that fails (a full disk: ResourceExhausted) is cut back off the journal and its operation refused (Enqueue,
// Submit, Cancel, and Next, whose task stays pending), so nothing refused counts later and the next record starts on
// a line of its own; the operation works again once space returns. Open() replays the journal, drops an unterminated
// last line (a write cut short: never acknowledged), refuses a corrupt record anywhere else (DataLoss with
// file:line), and rewrites the journal compactly, or, when the disk has no room for that, appends to it as it is.
//
// Thread-safe. Next() does not block: it calls back when a task is assigned, its wait ends or the queue closes.
#ifndef RLHF_COMMON_LABELING_LABELING_QUEUE_H_
#define RLHF_COMMON_LABELING_LABELING_QUEUE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/labeling/labeler.h"

namespace rlhf::labeling {

struct LabelingQueueOptions {
  // Directory for the journal; empty keeps everything in memory.
  std::string state_dir;
  // Assignment time of a batch that does not set one.
  absl::Duration default_task_timeout = absl::Minutes(10);
  // Called (outside the queue's lock) when counts change, when an assignment expires, and with the time from
  // assignment to answer of each ranking; any may be empty. For metrics.
  std::function<void()> on_change;
  std::function<void()> on_expired;
  std::function<void(absl::Duration)> on_answered;
};

struct NewBatch {
  std::string batch_id;  // required
  std::string run_id;
  int32_t round = 0;
  std::string instructions;
  absl::Duration task_timeout = absl::ZeroDuration();  // 0: LabelingQueueOptions::default_task_timeout
  std::vector<RankingTask> tasks;                       // each with >= 2 responses
};

struct BatchInfo {
  std::vector<std::string> task_ids;  // in NewBatch::tasks order
  absl::Time created;
  bool already_existed = false;
};

// A task as a labeler sees it: candidates shuffled, with ids "1".."K" in the order shown.
struct AssignedTask {
  std::string task_id;
  std::string prompt;
  std::vector<std::pair<std::string, std::string>> candidates;  // (candidate_id, text)
  absl::Time deadline;
  std::string run_id;
  int32_t round = 0;
  std::string instructions;
};

struct SubmittedRanking {
  int32_t task_index = 0;
  std::string task_id;
  std::string labeler_id;
  std::vector<int32_t> ranks;  // in the producer's response order
  absl::Time completed_at;
};

struct BatchRankings {
  std::vector<SubmittedRanking> rankings;  // by task_index
  int64_t total = 0;
  int64_t completed = 0;
  absl::Time created;
  bool cancelled = false;
};

struct QueueCounts {
  int64_t pending = 0;
  int64_t assigned = 0;
  int64_t completed = 0;
  int64_t expired = 0;  // expiries since the queue was opened
};

class LabelingQueue {
 public:
  // Replays <state_dir>/queue.jsonl when present. DataLoss naming file:line for a corrupt record other than an
  // unterminated last line.
  static absl::StatusOr<std::unique_ptr<LabelingQueue>> Open(LabelingQueueOptions options);
  // Closes the queue (see Close).
  ~LabelingQueue();

  // Adds a batch, or finds the same batch added before (already_existed). InvalidArgument naming the field for an
  // empty batch_id, no tasks, or a task with fewer than 2 responses; AlreadyExists when the batch_id holds other
  // tasks.
  absl::StatusOr<BatchInfo> Enqueue(const NewBatch& batch);

  // Assigns the oldest pending task to labeler_id, at once or when one appears within `wait`. `done` is called
  // exactly once, possibly on this thread before Next returns: with the task; NotFound when the wait ends first;
  // Cancelled after CancelWait; Unavailable when the queue closes; ResourceExhausted when the assignment cannot be
  // journaled (a full disk; the task stays pending). Returns an id for CancelWait.
  using TaskCallback = std::function<void(absl::StatusOr<AssignedTask>)>;
  int64_t Next(const std::string& labeler_id, absl::Duration wait, TaskCallback done);
  // Ends a waiting Next with Cancelled; nothing when it already ended.
  void CancelWait(int64_t wait_id);

  // Records a ranking: ranks are (candidate_id, rank) for every candidate exactly once, rank >= 1 (1 best, equal
  // ranks tie). Returns the rankings completed in the task's batch. NotFound (unknown task), InvalidArgument (a
  // candidate missing, unknown or ranked twice, a rank < 1), PermissionDenied (assigned to another labeler),
  // FailedPrecondition (this labeler's assignment expired, or the batch was withdrawn), AlreadyExists (answered).
  absl::StatusOr<int64_t> Submit(const std::string& task_id, const std::string& labeler_id,
                                 const std::vector<std::pair<std::string, int32_t>>& ranks);

  // NotFound for an unknown batch.
  absl::StatusOr<BatchRankings> Rankings(const std::string& batch_id) const;
  // Withdraws the batch's unanswered tasks; returns how many. NotFound for an unknown batch.
  absl::StatusOr<int64_t> Cancel(const std::string& batch_id);

  // Counts over all batches, or those of run_id when it is not empty.
  QueueCounts Counts(const std::string& run_id = "") const;

  // Ends every waiting Next with Unavailable and stops the expiry thread. Later calls to Next end at once with
  // Unavailable; the other methods keep working.
  void Close();

 private:
  struct State;
  explicit LabelingQueue(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace rlhf::labeling

#endif  // RLHF_COMMON_LABELING_LABELING_QUEUE_H_
