// The request path every model-serving engine shares: a bounded BatchQueue drained in batches by one engine thread
// (llama.cpp's server queue), with work whose caller gave up (deadline passed, call cancelled) dropped before it
// costs compute. An engine owns a BatchingEngine, validates requests itself, and supplies the function that runs a
// batch. LibTorch-free.
//
//   BatchingEngine<MyRequest, MyResult> batcher_{options.queue};
//   batcher_.Start([this](auto live) { RunBatch(std::move(live)); });   // once, after the model is loaded
//   batcher_.Submit(std::move(request), std::move(done), rows, group);  // from any thread, after validation
//
// `Request` must have `absl::Time deadline` and `std::function<bool()> cancelled` (may be empty) members.
#ifndef RLHF_COMMON_SERVING_BATCHING_ENGINE_H_
#define RLHF_COMMON_SERVING_BATCHING_ENGINE_H_

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/runtime/batch_queue.h"

namespace rlhf::serving {

template <typename Request, typename Result>
class BatchingEngine {
 public:
  using Callback = std::function<void(absl::StatusOr<Result>)>;
  struct Job {
    Request request;
    Callback done;        // runs exactly once
    absl::Time enqueued;  // when Submit queued it
  };
  using Jobs = std::vector<std::unique_ptr<Job>>;
  // Runs one batch of live jobs (never empty) on the engine thread and calls each job's `done`.
  using RunBatchFn = std::function<void(Jobs live)>;

  explicit BatchingEngine(const runtime::BatchQueueOptions& options) : queue_(options) {}
  ~BatchingEngine() { Shutdown(); }
  BatchingEngine(const BatchingEngine&) = delete;
  BatchingEngine& operator=(const BatchingEngine&) = delete;

  // Starts the engine thread. Call once; `run_batch` must stay valid until Shutdown returns.
  void Start(RunBatchFn run_batch) {
    run_batch_ = std::move(run_batch);
    thread_ = std::thread([this] { Loop(); });
  }

  // Queues a validated request of `rows` rows; only requests with equal `group` share a batch. `done` runs exactly
  // once: on the engine thread, or here with RESOURCE_EXHAUSTED (queue full) or UNAVAILABLE (shutting down).
  void Submit(Request request, Callback done, size_t rows, std::string group = "") {
    Callback callback = done;  // the job, with its callback, does not come back from a failed Push
    auto job = std::make_unique<Job>(Job{std::move(request), std::move(done), absl::Now()});
    if (absl::Status status = queue_.Push(std::move(job), rows, std::move(group)); !status.ok()) callback(status);
  }

  // Stops taking requests, runs the queued ones, and joins the engine thread. Idempotent. The owner calls it
  // before destroying what `run_batch` uses.
  void Shutdown() {
    if (shut_down_.exchange(true)) return;
    queue_.Close();
    if (thread_.joinable()) thread_.join();
  }

  size_t queue_depth() const { return queue_.size(); }
  const runtime::BatchQueueOptions& queue_options() const { return queue_.options(); }
  // Holds queued work in the queue (BatchQueue::SetPaused): tests use it to make requests wait deterministically.
  void SetPausedForTesting(bool paused) { queue_.SetPaused(paused); }

 private:
  void Loop() {
    while (true) {
      Jobs jobs = queue_.PopBatch();
      if (jobs.empty()) return;
      // Requests whose caller is gone free their slot without costing compute.
      Jobs live;
      for (auto& job : jobs) {
        if (absl::Status why = runtime::WorkExpired(job->request.deadline, job->request.cancelled); !why.ok()) {
          job->done(why);
        } else {
          live.push_back(std::move(job));
        }
      }
      if (!live.empty()) run_batch_(std::move(live));
    }
  }

  runtime::BatchQueue<std::unique_ptr<Job>> queue_;
  RunBatchFn run_batch_;
  std::thread thread_;
  std::atomic<bool> shut_down_{false};
};

}  // namespace rlhf::serving

#endif  // RLHF_COMMON_SERVING_BATCHING_ENGINE_H_
