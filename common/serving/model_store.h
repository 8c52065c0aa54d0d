// A served model: the current weights of one GPT-2 model with its version, and an atomic swap to new weights.
// Shared by the generation, reference and reward services. LibTorch-free header.
#ifndef RLHF_COMMON_SERVING_MODEL_STORE_H_
#define RLHF_COMMON_SERVING_MODEL_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/model/model_config.h"
#include "common/serving/prompt_codec.h"
#include "common/tokenizer/chat_template.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/path_roots.h"

namespace rlhf::model {
class CausalLm;
}

namespace rlhf::serving {

struct ModelStoreOptions {
  // Hugging Face checkpoint folder of any supported family: config.json, the weights (one file or shards), and
  // optionally the tokenizer's files.
  std::string model_dir;
  // Name reported with every result; empty means the folder's last component.
  std::string model_name;
  // LibTorch device, e.g. "cpu" or "cuda:0".
  std::string device = "cpu";
  // The checkpoint must have a reward head (score.weight): reward models are refused without one.
  bool require_reward_head = false;
  // Decode steps with at most this many rows use `mv` on [out, in] weight copies (ModelOptions::mv_max_batch).
  int64_t mv_max_batch = 1;
  // Folders whose checkpoints requests may name (the model services' --path_roots): UpdateWeightsFromCheckpoint
  // and ReloadModel resolve their path against them (PERMISSION_DENIED outside). Empty: none.
  util::PathRoots path_roots;
};

// One immutable version of the served weights. Readers hold a shared_ptr, so a swap never frees weights that a
// batch in flight still uses.
struct ServedModel {
  std::shared_ptr<const model::CausalLm> model;
  std::string name;
  int64_t version = 1;
  absl::Time loaded_at;
  std::string source;                           // checkpoint folder or "UpdateWeights stream"
  std::map<std::string, std::string> metadata;  // provenance (e.g. the sender's model name and version)
};

// Holds the current ServedModel and the tokenizer (which never changes: swaps keep the architecture).
// Thread-safe: Current() from any thread; swaps are serialised.
class ModelStore {
 public:
  // Loads version 1 from options.model_dir. The tokenizer is optional (absent: only token ids are accepted).
  static absl::StatusOr<std::unique_ptr<ModelStore>> Load(const ModelStoreOptions& options);
  ~ModelStore();

  std::shared_ptr<const ServedModel> Current() const;
  // Null when the model folder has no tokenizer files.
  const tokenizer::Tokenizer* tokenizer() const { return tokenizer_.get(); }
  // The tokenizer and the chat template of the model folder (loaded with the model; a template that cannot be
  // rendered leaves chat messages refused with the loader's reason, and the model serving text and token ids).
  const PromptCodec& prompt_codec() const { return codec_; }
  const model::ModelConfig& config() const { return config_; }
  const std::string& device() const { return options_.device; }
  const util::PathRoots& path_roots() const { return options_.path_roots; }

  struct SwapResult {
    std::shared_ptr<const ServedModel> previous;
    std::shared_ptr<const ServedModel> current;
    absl::Duration load_time;
    int64_t total_bytes = 0;
  };

  // Loads weights from a checkpoint folder (config.json + weights) into a new model, and makes it current with
  // version `target_version` (must exceed the current version, else ABORTED) or current + 1. Callers confine a
  // requested folder first (options.path_roots). The config must match the served architecture
  // (FAILED_PRECONDITION naming the field otherwise); a bad or incomplete checkpoint is refused and the current
  // model keeps serving.
  absl::StatusOr<SwapResult> SwapFromDirectory(const std::string& dir, std::optional<int64_t> target_version,
                                               std::map<std::string, std::string> metadata = {});
  // The same from a safetensors payload in memory (`source` names it in errors); a payload that lacks one of the
  // model's parameters is InvalidArgument naming it.
  absl::StatusOr<SwapResult> SwapFromSafetensors(std::string bytes, const std::string& source,
                                                 std::optional<int64_t> target_version,
                                                 std::map<std::string, std::string> metadata = {});

 private:
  explicit ModelStore(const ModelStoreOptions& options) : options_(options) {}
  absl::StatusOr<SwapResult> Install(std::shared_ptr<model::CausalLm> model, const std::string& source,
                                     std::optional<int64_t> target_version, std::map<std::string, std::string> metadata,
                                     absl::Time start, int64_t total_bytes);

  ModelStoreOptions options_;
  model::ModelConfig config_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  std::unique_ptr<tokenizer::ChatTemplate> chat_template_;
  PromptCodec codec_;
  mutable std::mutex mu_;  // guards current_
  std::mutex swap_mu_;     // one swap at a time
  std::shared_ptr<const ServedModel> current_;
};

}  // namespace rlhf::serving

#endif  // RLHF_COMMON_SERVING_MODEL_STORE_H_
