// The trainer's domain layer: holds the policy, the value model, the reward models it trained and the PPO learner
// state, reads and tokenizes training data, runs SFT, reward-model training and PPO steps, and writes and reads
// checkpoints. Knows no gRPC: the service converts protobuf at its edge. One operation runs at a time: callers take
// an OperationLease first (UNAVAILABLE naming the running operation otherwise).
#ifndef RLHF_SERVICES_PPO_TRAINER_TRAINER_ENGINE_H_
#define RLHF_SERVICES_PPO_TRAINER_TRAINER_ENGINE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/model/causal_lm.h"
#include "common/model/model_config.h"
#include "common/model/sampler.h"
#include "common/serving/prompt_codec.h"
#include "common/tokenizer/chat_template.h"
#include "common/tokenizer/tokenizer.h"
#include "common/training/events.h"
#include "common/training/ppo_learner.h"
#include "common/training/reward_trainer.h"
#include "common/training/sft_trainer.h"
#include "common/util/path_roots.h"

namespace rlhf::trainer {

struct TrainerEngineOptions {
  // Initial policy: a model folder (config.json, model.safetensors, tokenizer files). Empty: none until TrainSft
  // with init_model_path or LoadCheckpoint.
  std::string model_dir;
  // Where checkpoints go when a request names no directory (created at start).
  std::string checkpoint_root = "checkpoints";
  // Folders every path a request names must resolve into, symlinks followed (data files, checkpoints to load or
  // write, output folders); PERMISSION_DENIED outside. Empty: checkpoint_root alone.
  std::vector<std::string> path_roots;
  std::string device = "cpu";
  std::string policy_name = "policy";
  int32_t max_rollouts = 4096;  // per PpoStep
};

struct ModelIdentity {
  std::string name;
  int64_t version = 0;  // 0: no such model
};

// A prompt or response as the caller sent it.
struct TextOrIds {
  bool is_text = true;
  std::string text;
  std::vector<int64_t> ids;
  // Non-empty: a chat prompt, rendered with the policy's chat template (text and ids are then unused). A text
  // response to it is the assistant turn the template would contain, its end-of-turn token included.
  std::vector<tokenizer::ChatMessage> messages;
};

enum class BadRecords { kFail, kSkip };

struct SftJob {
  std::string data_path;  // JSON Lines {"prompt", "response"}; or inline_examples
  std::vector<std::pair<TextOrIds, TextOrIds>> inline_examples;
  double validation_fraction = 0;
  std::string validation_path;
  training::SftOptions options;  // checkpoint_dir and save_extra are set by the engine
  // EpochSelection::kScore: responses to `score_prompts` validation prompts (0: all, up to 256) are sampled with
  // `score_sampling` after each epoch and scored by `score_responses` (e.g. a reward service); the mean is the score.
  int32_t score_prompts = 0;
  model::SamplingOptions score_sampling;
  std::function<absl::StatusOr<std::vector<float>>(const std::vector<std::vector<int64_t>>& prompts,
                                                   const std::vector<std::vector<int64_t>>& responses)>
      score_responses;
  std::string output_dir;       // empty: <checkpoint_root>/sft-<n>
  std::string init_model_path;  // empty: the current policy
  BadRecords bad_records = BadRecords::kFail;
  // Checked while data files are read (every 64 KiB); a non-OK status stops the operation with it. Null: never.
  std::function<absl::Status()> keep_going;
};

struct RankedItem {
  TextOrIds response;
  int32_t rank = 0;
};

struct ComparisonItem {
  TextOrIds prompt;
  std::vector<RankedItem> responses;
};

struct RewardJob {
  std::string comparisons_path;  // JSON Lines comparisons; or inline_comparisons
  std::vector<ComparisonItem> inline_comparisons;
  std::string init_model_path;  // empty: the current policy
  training::RewardTrainingOptions options;
  double validation_fraction = 0;
  std::string normalization_demonstrations_path;  // SFT-format; empty: bias 0
  BadRecords bad_records = BadRecords::kFail;
  std::string output_dir;  // the checkpoint directory is <output_dir>/rm-<n>; empty: <checkpoint_root>/reward
  bool init_value_model = false;
  std::function<absl::Status()> keep_going;  // as SftJob::keep_going
};

struct StageSummary {
  ModelIdentity model_id;
  std::string checkpoint_path;
  int32_t selected_epoch = 0;
  std::map<std::string, double> metrics;
  absl::Duration elapsed;
  int64_t train_examples = 0;
  int64_t validation_examples = 0;
  int64_t records_skipped = 0;
  double normalization_bias = 0;
};

struct PpoJob {
  std::vector<training::Rollout> rollouts;
  training::PpoOptions options;
  std::vector<TextOrIds> ptx_examples;
  double gamma_ptx = 0;
  std::optional<int64_t> expected_policy_version;
};

struct PpoOutcome {
  training::PpoStepStats stats;
  ModelIdentity policy;
  ModelIdentity value;
};

struct CheckpointOutcome {
  std::string path;
  int64_t step = 0;
  ModelIdentity policy;
  ModelIdentity value;
  int64_t total_bytes = 0;
};

enum class LoadRole { kAll, kPolicy, kValue };

struct ExportedWeights {
  std::string safetensors;  // SerializeSafetensors bytes
  ModelIdentity model_id;
  model::ModelConfig config;
};

// Facts about the policy for GetModelInfo.
struct PolicyInfo {
  ModelIdentity id;
  model::ModelConfig config;
  int64_t parameter_count = 0;
  std::string device;
  std::string source;
  absl::Time loaded_at;
  std::string tokenizer_kind;  // tokenizer::Tokenizer::Kind(), empty without a tokenizer
  int32_t tokenizer_vocab_size = 0;
  std::optional<int32_t> eos_id, pad_id;
};

class TrainerEngine;

// Held while an operation runs; releases the trainer when destroyed.
class OperationLease {
 public:
  OperationLease(OperationLease&& other) noexcept : engine_(std::exchange(other.engine_, nullptr)) {}
  OperationLease& operator=(OperationLease&&) = delete;
  ~OperationLease();

 private:

  friend class TrainerEngine;
  explicit OperationLease(TrainerEngine* engine) : engine_(engine) {}
  TrainerEngine* engine_;
};

class TrainerEngine {
 public:
  static absl::StatusOr<std::unique_ptr<TrainerEngine>> Create(const TrainerEngineOptions& options);
  ~TrainerEngine();

  // UNAVAILABLE ("TrainSft is running ...") when another operation holds the trainer: the caller may retry (a
  // caller that went away, e.g. a killed orchestrator, leaves its operation to end at its next step).
  absl::StatusOr<OperationLease> Acquire(const std::string& operation);

  // The long operations: call with a lease held, off any RPC thread. `progress` may stop them (its status is
  // returned).
  absl::StatusOr<StageSummary> TrainSft(const SftJob& job, const training::ProgressSink& progress);
  absl::StatusOr<StageSummary> TrainRewardModel(const RewardJob& job, const training::ProgressSink& progress);
  absl::StatusOr<PpoOutcome> PpoStep(const PpoJob& job);
  // The policy (or its EMA, or the value model) as a safetensors payload for UpdateWeights.
  absl::StatusOr<ExportedWeights> ExportWeights(LoadRole role, bool ema);
  absl::StatusOr<CheckpointOutcome> SaveCheckpoint(const std::string& path,
                                                   const std::map<std::string, std::string>& metadata);
  absl::StatusOr<CheckpointOutcome> LoadCheckpoint(const std::string& path, LoadRole role);

  // Thread-safe at any time.
  absl::StatusOr<PolicyInfo> GetPolicyInfo() const;
  const TrainerEngineOptions& options() const { return options_; }

 private:
  friend class OperationLease;
  explicit TrainerEngine(const TrainerEngineOptions& options);
  struct State;
  absl::Status LoadPolicy(const std::string& dir);
  absl::StatusOr<std::vector<int64_t>> EncodePrompt(const TextOrIds& value, const std::string& field) const;
  // The policy's tokenizer and chat template, as the model services encode chat prompts.
  serving::PromptCodec ChatCodec() const;
  // `value` answering `prompt` (a chat prompt's text reply is its assistant turn).
  absl::StatusOr<std::vector<int64_t>> EncodeResponse(const TextOrIds& prompt, const TextOrIds& value,
                                                      const std::string& field) const;
  absl::Status SaveModelDir(const model::CausalLm& model, const std::string& dir,
                            const std::map<std::string, std::string>& metadata) const;
  void Release();
  // The request's paths resolved inside options.path_roots (reads must exist; writes may create folders).
  absl::Status ConfinePaths(SftJob* job) const;
  absl::Status ConfinePaths(RewardJob* job) const;
  absl::StatusOr<std::string> ReadablePath(const std::string& path, absl::string_view field) const;
  absl::StatusOr<std::string> WritablePath(const std::string& path, absl::string_view field) const;

  TrainerEngineOptions options_;
  util::PathRoots roots_;
  std::unique_ptr<State> state_;
  mutable std::mutex mu_;          // guards operation_ and the identities in state_
  std::string operation_;          // the running operation; empty when idle
};

}  // namespace rlhf::trainer

#endif  // RLHF_SERVICES_PPO_TRAINER_TRAINER_ENGINE_H_
