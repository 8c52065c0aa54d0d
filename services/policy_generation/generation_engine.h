// The policy-generation engine: one thread owns sampling; requests from concurrent callers are queued and batched
// (same sampling settings -> one batch); weights are swapped atomically between batches. Knows no gRPC.
// LibTorch-free header.
#ifndef RLHF_SERVICES_POLICY_GENERATION_GENERATION_ENGINE_H_
#define RLHF_SERVICES_POLICY_GENERATION_GENERATION_ENGINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/model/sampler.h"
#include "common/runtime/batch_queue.h"
#include "common/serving/batching_engine.h"
#include "common/serving/model_store.h"

namespace rlhf::generation {

struct GenerationEngineOptions {
  serving::ModelStoreOptions model;
  runtime::BatchQueueOptions queue;  // max_batch_rows counts prompts x samples
  int64_t max_prompts = 256;         // per request
  int64_t max_samples = 16;          // per prompt
  int64_t max_new_tokens = 1024;     // per sample; also bounded by the model's max_position_embeddings
  int64_t max_prompt_tokens = 4096;  // per prompt; also bounded by max_position_embeddings
};

// What to sample. Prompts are token ids (the service edge tokenizes text).
struct GenerationRequest {
  std::vector<std::vector<int64_t>> prompts;
  int64_t num_samples = 1;
  double temperature = 1.0;  // 0 = greedy
  int64_t top_k = 0;
  double top_p = 1.0;
  int64_t max_new_tokens = 64;
  std::vector<std::string> stop_strings;
  std::vector<int64_t> stop_token_ids;
  bool ignore_eos = false;
  std::optional<uint64_t> seed;  // absent: a fresh random seed
  std::optional<int64_t> min_model_version;
  absl::Time deadline = absl::InfiniteFuture();
  // Polled by the engine between batches and decode steps; true stops the work for this request.
  std::function<bool()> cancelled;
};

struct GeneratedSample {
  std::vector<int64_t> tokens;
  std::vector<float> logprobs;  // log softmax(logits / temperature)[token] over the full vocabulary
  model::FinishReason finish_reason = model::FinishReason::kLength;
  std::string text;         // decoded response (empty without a tokenizer)
  std::string stop_string;  // the stop string that ended it, if any
};

struct GenerationResult {
  std::string model_name;
  int64_t model_version = 0;
  // samples[prompt][sample]
  std::vector<std::vector<GeneratedSample>> samples;
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  absl::Duration queue_time;
  absl::Duration compute_time;
};

class GenerationEngine {
 public:
  using Callback = std::function<void(absl::StatusOr<GenerationResult>)>;
  // Called after each batch with its number of rows, tokens generated and compute time (for metrics).
  using BatchObserver = std::function<void(int64_t rows, int64_t tokens, absl::Duration compute)>;

  static absl::StatusOr<std::unique_ptr<GenerationEngine>> Create(const GenerationEngineOptions& options);
  ~GenerationEngine();  // stops the engine thread; queued requests get UNAVAILABLE

  // Validates and queues `request`; `done` runs exactly once, on the engine thread (or inline for errors found
  // before queueing). InvalidArgument naming the field for bad input, RESOURCE_EXHAUSTED when the queue is full,
  // FAILED_PRECONDITION when min_model_version is above the served version, DEADLINE_EXCEEDED / CANCELLED when the
  // caller gave up before the work finished.
  void Submit(GenerationRequest request, Callback done);

  // Stops taking requests, finishes the queued ones, and joins the engine thread. Idempotent.
  void Shutdown();

  serving::ModelStore& store() { return *store_; }
  size_t queue_depth() const { return batcher_.queue_depth(); }
  void set_batch_observer(BatchObserver observer) { batch_observer_ = std::move(observer); }

 private:
  using Batcher = serving::BatchingEngine<GenerationRequest, GenerationResult>;

  explicit GenerationEngine(const GenerationEngineOptions& options) : options_(options), batcher_(options.queue) {}
  absl::Status Validate(const GenerationRequest& request) const;
  void RunBatch(Batcher::Jobs live);

  GenerationEngineOptions options_;
  std::unique_ptr<serving::ModelStore> store_;
  BatchObserver batch_observer_;
  // Engine thread only: the sampler of sampler_model_ (held so that its weights stay alive while it is used).
  std::shared_ptr<const serving::ServedModel> sampler_model_;
  std::unique_ptr<model::Sampler> sampler_;  // destroyed before the model it points to
  Batcher batcher_;                          // last: its engine thread is joined before the rest goes
};

// Identifies requests that can share a batch (equal sampling settings).
std::string BatchGroupKey(const GenerationRequest& request);

}  // namespace rlhf::generation

#endif  // RLHF_SERVICES_POLICY_GENERATION_GENERATION_ENGINE_H_
