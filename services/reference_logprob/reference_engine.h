// The reference-logprob engine: the frozen SFT model scoring given responses, batched across callers on one
// engine thread. Knows no gRPC. LibTorch-free header.
#ifndef RLHF_SERVICES_REFERENCE_LOGPROB_REFERENCE_ENGINE_H_
#define RLHF_SERVICES_REFERENCE_LOGPROB_REFERENCE_ENGINE_H_

#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/model/sampler.h"
#include "common/runtime/batch_queue.h"
#include "common/serving/batching_engine.h"
#include "common/serving/model_store.h"

namespace rlhf::reference {

struct ReferenceEngineOptions {
  serving::ModelStoreOptions model;
  runtime::BatchQueueOptions queue;  // max_batch_rows counts sequences
  int64_t max_sequences = 1024;      // per request
};

struct LogProbsRequest {
  std::vector<model::ScoreRequest> sequences;
  double temperature = 1.0;
  absl::Time deadline = absl::InfiniteFuture();
  std::function<bool()> cancelled;
};

struct LogProbsResult {
  std::string model_name;
  int64_t model_version = 0;
  std::vector<std::vector<float>> logprobs;  // one per sequence, one per response token
};

class ReferenceEngine {
 public:
  using Callback = std::function<void(absl::StatusOr<LogProbsResult>)>;
  using BatchObserver = std::function<void(int64_t rows, int64_t tokens, absl::Duration compute)>;

  static absl::StatusOr<std::unique_ptr<ReferenceEngine>> Create(const ReferenceEngineOptions& options);
  ~ReferenceEngine();

  // Validates and queues; `done` runs once (engine thread, or inline for errors found before queueing).
  // InvalidArgument naming the field, RESOURCE_EXHAUSTED when the queue is full, DEADLINE_EXCEEDED / CANCELLED.
  void Submit(LogProbsRequest request, Callback done);
  void Shutdown();

  serving::ModelStore& store() { return *store_; }
  size_t queue_depth() const { return batcher_.queue_depth(); }
  void set_batch_observer(BatchObserver observer) { batch_observer_ = std::move(observer); }

 private:
  using Batcher = serving::BatchingEngine<LogProbsRequest, LogProbsResult>;

  explicit ReferenceEngine(const ReferenceEngineOptions& options) : options_(options), batcher_(options.queue) {}
  absl::Status Validate(const LogProbsRequest& request) const;
  void RunBatch(Batcher::Jobs live);

  ReferenceEngineOptions options_;
  std::unique_ptr<serving::ModelStore> store_;
  BatchObserver batch_observer_;
  Batcher batcher_;
};

}  // namespace rlhf::reference

#endif  // RLHF_SERVICES_REFERENCE_LOGPROB_REFERENCE_ENGINE_H_
