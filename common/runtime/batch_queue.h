// A bounded request queue drained in batches by one engine thread (llama.cpp's server queue; Triton's dynamic
// batcher): handlers Push and return at once; the engine thread owns the model and calls PopBatch.
#ifndef RLHF_COMMON_RUNTIME_BATCH_QUEUE_H_
#define RLHF_COMMON_RUNTIME_BATCH_QUEUE_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace rlhf::runtime {

struct BatchQueueOptions {
  // Requests waiting at most; Push beyond it fails with RESOURCE_EXHAUSTED.
  size_t max_queued = 256;
  // Rows (prompts x samples, sequences...) a batch may hold. A single request larger than this forms a batch alone.
  size_t max_batch_rows = 16;
  // How long the first request of a batch waits for others to join it. Zero batches only what is already queued.
  absl::Duration max_wait = absl::Milliseconds(5);
};

// Thread-safe. `Item` must be movable.
template <typename Item>
class BatchQueue {
 public:
  explicit BatchQueue(BatchQueueOptions options) : options_(options) {}

  // Queues `item` of `rows` rows. Only items with equal `group` are batched together (e.g. requests with the same
  // sampling parameters). RESOURCE_EXHAUSTED when full, UNAVAILABLE once closed.
  absl::Status Push(Item item, size_t rows, std::string group = "") {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return absl::UnavailableError("the server is shutting down and takes no new work");
      if (queue_.size() >= options_.max_queued) {
        return absl::ResourceExhaustedError(
            absl::StrCat("request queue is full (", options_.max_queued, " requests waiting); retry later"));
      }
      queue_.push_back(Entry{std::move(item), rows, std::move(group), absl::Now()});
    }
    cv_.notify_all();
    return absl::OkStatus();
  }

  // Blocks until a request is queued (or the queue is closed), then gathers a batch: the oldest request and the
  // following ones of its group, until max_batch_rows is reached or max_wait has passed since the oldest arrived.
  // Returns an empty vector only when the queue is closed and empty.
  std::vector<Item> PopBatch() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return closed_ || (!queue_.empty() && !paused_); });
    if (queue_.empty()) return {};
    const absl::Time deadline = queue_.front().arrived + options_.max_wait;
    while (!closed_ && GroupRows(queue_.front().group) < options_.max_batch_rows) {
      const absl::Time now = absl::Now();
      if (now >= deadline) break;
      cv_.wait_for(lock, absl::ToChronoNanoseconds(deadline - now));
    }
    std::vector<Item> batch;
    const std::string group = queue_.front().group;
    size_t rows = 0;
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (it->group != group) {
        ++it;
        continue;
      }
      if (!batch.empty() && rows + it->rows > options_.max_batch_rows) break;
      rows += it->rows;
      batch.push_back(std::move(it->item));
      it = queue_.erase(it);
    }
    return batch;
  }

  // While paused, PopBatch hands out nothing (requests still queue, up to max_queued); a batch already popped is not
  // affected. Tests use it to hold work in the queue deterministically. Close ends a pause.
  void SetPaused(bool paused) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      paused_ = paused;
    }
    cv_.notify_all();
  }

  // Refuses new work and wakes the engine; PopBatch still returns what was queued, then empty batches.
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      paused_ = false;
    }
    cv_.notify_all();
  }

  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return queue_.size();
  }

  const BatchQueueOptions& options() const { return options_; }

 private:
  struct Entry {
    Item item;
    size_t rows;
    std::string group;
    absl::Time arrived;
  };

  size_t GroupRows(const std::string& group) const {
    size_t rows = 0;
    for (const auto& entry : queue_) {
      if (entry.group == group) rows += entry.rows;
    }
    return rows;
  }

  const BatchQueueOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Entry> queue_;
  bool closed_ = false;
  bool paused_ = false;
};

// For an engine about to run queued work: CANCELLED when the caller cancelled, DEADLINE_EXCEEDED when its deadline
// passed, else OK. `cancelled` may be empty.
template <typename CancelledFn>
absl::Status WorkExpired(absl::Time deadline, const CancelledFn& cancelled) {
  if (cancelled && cancelled()) return absl::CancelledError("the caller cancelled the request");
  if (absl::Now() >= deadline) return absl::DeadlineExceededError("the request's deadline passed before it was served");
  return absl::OkStatus();
}

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_BATCH_QUEUE_H_
