// The reward-scoring engine: a versioned reward model scoring (prompt, response) token sequences, batched across
// concurrent callers on one engine thread, and hot-reloaded from checkpoints on a loader thread. Knows no gRPC.
// LibTorch-free header.
//
// A score is the reward head on the last token of prompt + response: h_last . score.weight + score.bias, where
// score.bias is the normalisation bias the trainer sets so that SFT demonstrations score 0 on average (Hugging Face
// GPT2ForSequenceClassification checkpoints have none: bias 0). Every result is computed by one model version.
//
// Checkpoints to reload are folders in Hugging Face form (config.json + model.safetensors, optionally tokenizer
// files). A watched folder holds one subfolder per checkpoint, written under a hidden name (".tmp-<name>") and
// renamed into place when complete: names starting with '.' are ignored, and the newest checkpoint is the one whose
// model.safetensors has the latest mtime (ties: the greatest name). A checkpoint that fails validation (another
// architecture or tokenizer, no reward head, corrupt tensors) is refused, the old model keeps serving, and the
// watcher skips it until its files change.
#ifndef RLHF_SERVICES_REWARD_SCORING_REWARD_ENGINE_H_
#define RLHF_SERVICES_REWARD_SCORING_REWARD_ENGINE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/serving/batching_engine.h"
#include "common/serving/model_store.h"

namespace rlhf::reward {

struct RewardEngineOptions {
  // The model served at start. model.model_dir may be empty when watch_dir is set (the newest checkpoint there is
  // loaded) or when models arrive only by Reload; until one is loaded, requests fail with UNAVAILABLE.
  // require_reward_head is forced on.
  serving::ModelStoreOptions model;
  // max_batch_rows counts (prompt, response) pairs and also caps the rows of one forward pass (a request with more
  // items is scored in several passes, all by the same model version).
  runtime::BatchQueueOptions queue;
  int64_t max_items = 1024;  // per request
  // Folder polled every watch_interval for a newer checkpoint; empty: no watching.
  std::string watch_dir;
  absl::Duration watch_interval = absl::Seconds(2);
  // Reload accepts checkpoint folders under model.path_roots (the --path_roots), not only under watch_dir.
  // Without it, Reload loads only from watch_dir (and is disabled without one).
  bool allow_reload = false;
};

// One pair to score, as token ids (the service edge encodes text).
struct ScorePair {
  std::vector<int64_t> prompt;    // non-empty
  std::vector<int64_t> response;  // may be empty
};

struct RewardRequest {
  std::vector<ScorePair> items;
  std::optional<int64_t> min_model_version;
  absl::Time deadline = absl::InfiniteFuture();
  std::function<bool()> cancelled;  // polled before the work runs; may be empty
};

struct RewardResult {
  std::string model_name;
  int64_t model_version = 0;
  float normalization_bias = 0;  // score.bias of that version, already part of every score
  std::vector<float> scores;     // one per item, in order
  int64_t tokens = 0;            // tokens scored (prompt + response, every item)
};

enum class ReloadOutcome { kReloaded, kAlreadyCurrent, kRefused };

struct ReloadResult {
  ReloadOutcome outcome = ReloadOutcome::kRefused;
  std::string checkpoint_path;  // the folder considered, absolute
  std::string message;          // what happened; for kRefused, why
  std::string model_name;
  int64_t previous_version = 0;  // 0: no model was loaded
  int64_t version = 0;           // served after the reload (0: still none)
  float normalization_bias = 0;  // of the model served after the reload
  bool from_watcher = false;     // the watcher asked, not a caller
};

// Identity of a checkpoint folder's files: a checkpoint rewritten in place counts as a new one.
struct CheckpointFingerprint {
  int64_t weights_mtime_ns = -1, weights_size = -1, config_mtime_ns = -1, config_size = -1;
  bool operator==(const CheckpointFingerprint& o) const {
    return weights_mtime_ns == o.weights_mtime_ns && weights_size == o.weights_size &&
           config_mtime_ns == o.config_mtime_ns && config_size == o.config_size;
  }
  bool operator!=(const CheckpointFingerprint& o) const { return !(*this == o); }
};

struct CheckpointCandidate {
  std::string path;  // absolute
  CheckpointFingerprint fingerprint;
};

// Checkpoints of a watched folder, newest first (see the header comment). NotFound when `dir` does not exist.
absl::StatusOr<std::vector<CheckpointCandidate>> ListCheckpoints(const std::string& dir);

class RewardEngine {
 public:
  using Callback = std::function<void(absl::StatusOr<RewardResult>)>;
  using ReloadCallback = std::function<void(absl::StatusOr<ReloadResult>)>;
  // After each batch: (prompt, response) pairs scored, tokens, compute time. Engine thread.
  using BatchObserver = std::function<void(int64_t rows, int64_t tokens, absl::Duration compute)>;
  // After each reload attempt that reached a checkpoint (RPC or watcher). Loader thread.
  using ReloadObserver = std::function<void(const ReloadResult&)>;

  // Loads the newest loadable checkpoint of options.watch_dir if any, else options.model.model_dir if given, and
  // starts the engine thread (and the loader thread, which also polls watch_dir, when reloading is enabled). A
  // model_dir that is needed and cannot be served fails Create; a server without any model may start.
  static absl::StatusOr<std::unique_ptr<RewardEngine>> Create(const RewardEngineOptions& options);
  ~RewardEngine();

  // Validates and queues; `done` runs exactly once (engine thread, or inline for errors found before queueing).
  // InvalidArgument naming the field, FAILED_PRECONDITION when min_model_version is above the served version,
  // UNAVAILABLE without a model, RESOURCE_EXHAUSTED when the queue is full, DEADLINE_EXCEEDED / CANCELLED when the
  // caller gave up before the work ran.
  void Submit(RewardRequest request, Callback done);

  // Loads `checkpoint_path` (empty: the newest checkpoint of watch_dir) on the loader thread and swaps it in; `done`
  // runs there. Errors: FAILED_PRECONDITION when reloading is disabled, NOT_FOUND (path missing, no checkpoint in the
  // watched folder), INVALID_ARGUMENT (malformed path, or empty without watch_dir), RESOURCE_EXHAUSTED when 4 reloads
  // are already waiting, UNAVAILABLE when shutting down.
  // A checkpoint that cannot be served is a kRefused result, not an error.
  void Reload(std::string checkpoint_path, ReloadCallback done);
  bool reload_enabled() const { return !options_.watch_dir.empty() || options_.allow_reload; }
  // Where a ReloadModel path may point: inside watch_dir, or with allow_reload inside model.path_roots; symlinks
  // resolved. PERMISSION_DENIED naming the field and the allowed folders otherwise.
  absl::StatusOr<std::string> ResolveReloadPath(const std::string& checkpoint_path) const;

  // Stops the watcher and the loader (queued reloads get UNAVAILABLE), runs the queued requests, joins. Idempotent.
  void Shutdown();

  // Null until a model is loaded; then fixed for the engine's life (reloads swap the weights inside it).
  const serving::ModelStore* store() const { return store_.load(std::memory_order_acquire); }
  // The EOS id appended to text responses: the tokenizer's, else config.json's eos_token_id. Needs a model.
  std::optional<int64_t> eos_token_id() const;
  size_t queue_depth() const { return batcher_.queue_depth(); }
  void SetPausedForTesting(bool paused) { batcher_.SetPausedForTesting(paused); }
  const RewardEngineOptions& options() const { return options_; }

  void set_batch_observer(BatchObserver observer);
  void set_reload_observer(ReloadObserver observer);

 private:
  using Batcher = serving::BatchingEngine<RewardRequest, RewardResult>;
  enum class LoadCause { kStartup, kWatcher, kRequest };  // for logs and ReloadResult.from_watcher

  explicit RewardEngine(const RewardEngineOptions& options);
  absl::Status Validate(const RewardRequest& request) const;
  void RunBatch(Batcher::Jobs live);
  // Loader thread.
  void LoaderLoop();
  absl::StatusOr<ReloadResult> ReloadNow(const std::string& checkpoint_path);
  ReloadResult Load(const CheckpointCandidate& candidate, LoadCause cause);
  // Loads the newest checkpoint of watch_dir not known to be broken, when it changed since the last poll.
  void Poll(LoadCause cause);
  void Notify(const ReloadResult& result);

  RewardEngineOptions options_;
  std::unique_ptr<serving::ModelStore> owned_store_;  // written once, by the first successful load
  std::atomic<serving::ModelStore*> store_{nullptr};

  // Engine thread only: the bias of the version last used.
  int64_t bias_version_ = 0;
  float bias_ = 0;

  // Loader thread only.
  std::optional<CheckpointCandidate> served_checkpoint_;  // what the current version was loaded from
  std::map<std::string, CheckpointFingerprint> refused_;  // by path: skipped by the watcher until changed
  std::optional<CheckpointCandidate> last_considered_;    // the watcher's last pick
  bool watch_dir_missing_logged_ = false;

  std::mutex observers_mu_;
  BatchObserver batch_observer_;
  ReloadObserver reload_observer_;

  std::mutex loader_mu_;
  std::condition_variable loader_cv_;
  std::deque<std::pair<std::string, ReloadCallback>> reloads_;  // guarded by loader_mu_
  bool loader_stopping_ = false;                                // guarded by loader_mu_
  std::thread loader_;

  std::atomic<bool> shut_down_{false};
  Batcher batcher_;  // last: destroyed first (Shutdown has joined its thread by then)
};

// score.bias of a reward model (0 when it has none).
float NormalizationBias(const serving::ServedModel& served);

}  // namespace rlhf::reward

#endif  // RLHF_SERVICES_REWARD_SCORING_REWARD_ENGINE_H_
