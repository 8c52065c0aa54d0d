#include "common/serving/model_store.h"

#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include "absl/strings/str_cat.h"
#include "common/model/gpt2.h"
#include "common/model/safetensors.h"
#include "common/util/status_macros.h"

namespace rlhf::serving {
namespace {

std::string LastComponent(const std::string& path) {
  std::string trimmed = path;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  const size_t slash = trimmed.find_last_of('/');
  return slash == std::string::npos ? trimmed : trimmed.substr(slash + 1);
}

absl::StatusOr<model::Gpt2Options> MakeModelOptions(const ModelStoreOptions& options) {
  model::Gpt2Options model_options;
  try {
    model_options.device = c10::Device(options.device);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("--device: '", options.device, "' is not a LibTorch device"));
  }
  model_options.mv_max_batch = options.mv_max_batch;
  return model_options;
}

}  // namespace

absl::Status CheckSameArchitecture(const model::Gpt2Config& served, const model::Gpt2Config& update) {
  auto differs = [](const char* field, auto here, auto there) {
    return absl::FailedPreconditionError(
        absl::StrCat("architecture differs: ", field, " is ", here, " here, ", there, " in the update"));
  };
  if (served.n_layer != update.n_layer) return differs("n_layer", served.n_layer, update.n_layer);
  if (served.n_embd != update.n_embd) return differs("n_embd", served.n_embd, update.n_embd);
  if (served.n_head != update.n_head) return differs("n_head", served.n_head, update.n_head);
  if (served.n_positions != update.n_positions) {
    return differs("n_positions", served.n_positions, update.n_positions);
  }
  if (served.vocab_size != update.vocab_size) return differs("vocab_size", served.vocab_size, update.vocab_size);
  if (served.inner_dim() != update.inner_dim()) return differs("n_inner", served.inner_dim(), update.inner_dim());
  if (served.activation_function != update.activation_function) {
    return differs("activation_function", served.activation_function, update.activation_function);
  }
  if (served.layer_norm_epsilon != update.layer_norm_epsilon) {
    return differs("layer_norm_epsilon", served.layer_norm_epsilon, update.layer_norm_epsilon);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ModelStore>> ModelStore::Load(const ModelStoreOptions& options) {
  if (options.model_dir.empty()) return absl::InvalidArgumentError("--model: no model folder given");
  std::unique_ptr<ModelStore> store(new ModelStore(options));
  if (store->options_.model_name.empty()) store->options_.model_name = LastComponent(options.model_dir);
  ASSIGN_OR_RETURN(model::Gpt2Options model_options, MakeModelOptions(options));
  ASSIGN_OR_RETURN(std::unique_ptr<model::Gpt2Model> model, model::Gpt2Model::Load(options.model_dir, model_options));
  if (options.require_reward_head && !model->has_reward_head()) {
    return absl::FailedPreconditionError(
        absl::StrCat(options.model_dir, " has no reward head (score.weight): not a reward model"));
  }
  store->config_ = model->config();
  auto tokenizer = tokenizer::LoadTokenizer(options.model_dir);
  if (tokenizer.ok()) {
    if ((*tokenizer)->VocabSize() > store->config_.vocab_size) {
      return absl::FailedPreconditionError(
          absl::StrCat("tokenizer of ", options.model_dir, " has ", (*tokenizer)->VocabSize(),
                       " ids but the model's vocab_size is ", store->config_.vocab_size));
    }
    store->tokenizer_ = *std::move(tokenizer);
  } else if (tokenizer.status().code() != absl::StatusCode::kNotFound) {
    return tokenizer.status();
  }
  auto served = std::make_shared<ServedModel>();
  served->model = std::move(model);
  served->name = store->options_.model_name;
  served->version = 1;
  served->loaded_at = absl::Now();
  served->source = options.model_dir;
  store->current_ = std::move(served);
  return store;
}

ModelStore::~ModelStore() = default;

std::shared_ptr<const ServedModel> ModelStore::Current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return current_;
}

absl::StatusOr<ModelStore::SwapResult> ModelStore::SwapFromDirectory(const std::string& dir,
                                                                     std::optional<int64_t> target_version,
                                                                     std::map<std::string, std::string> metadata) {
  std::lock_guard<std::mutex> swap_lock(swap_mu_);
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(const model::Gpt2Config config, model::Gpt2Config::FromFile(dir + "/config.json"));
  RETURN_IF_ERROR(CheckSameArchitecture(config_, config));
  ASSIGN_OR_RETURN(model::Gpt2Options model_options, MakeModelOptions(options_));
  ASSIGN_OR_RETURN(std::unique_ptr<model::Gpt2Model> model, model::Gpt2Model::Load(dir, model_options));
  if (options_.require_reward_head && !model->has_reward_head()) {
    return absl::FailedPreconditionError(absl::StrCat(dir, " has no reward head (score.weight): not a reward model"));
  }
  return Install(std::move(model), dir, target_version, std::move(metadata), start, 0);
}

absl::StatusOr<ModelStore::SwapResult> ModelStore::SwapFromSafetensors(std::string bytes, const std::string& source,
                                                                       std::optional<int64_t> target_version,
                                                                       std::map<std::string, std::string> metadata) {
  std::lock_guard<std::mutex> swap_lock(swap_mu_);
  const absl::Time start = absl::Now();
  const int64_t total_bytes = static_cast<int64_t>(bytes.size());
  ASSIGN_OR_RETURN(std::unique_ptr<model::SafetensorsFile> file,
                   model::SafetensorsFile::Parse(std::move(bytes), source));
  ASSIGN_OR_RETURN(model::Gpt2Options model_options, MakeModelOptions(options_));
  const auto current = Current();
  // A fresh model of the served architecture (with the same heads), then every parameter from the payload.
  model_options.reward_head = current->model->has_reward_head();
  model_options.value_head = current->model->has_value_head();
  ASSIGN_OR_RETURN(std::unique_ptr<model::Gpt2Model> model, model::Gpt2Model::Create(config_, model_options));
  if (absl::Status loaded = model->LoadWeights(*file); !loaded.ok()) {
    // A payload without one of the parameters is a bad payload (the API's INVALID_ARGUMENT naming the tensor), not
    // a missing resource.
    if (absl::IsNotFound(loaded)) return absl::InvalidArgumentError(loaded.message());
    return loaded;
  }
  return Install(std::move(model), source, target_version, std::move(metadata), start, total_bytes);
}

absl::StatusOr<ModelStore::SwapResult> ModelStore::Install(std::shared_ptr<model::Gpt2Model> model,
                                                           const std::string& source,
                                                           std::optional<int64_t> target_version,
                                                           std::map<std::string, std::string> metadata,
                                                           absl::Time start, int64_t total_bytes) {
  auto served = std::make_shared<ServedModel>();
  served->model = std::move(model);
  served->name = options_.model_name;
  served->loaded_at = absl::Now();
  served->source = source;
  served->metadata = std::move(metadata);
  SwapResult result;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (target_version.has_value() && *target_version <= current_->version) {
      return absl::AbortedError(
          absl::StrCat("target_version ", *target_version, " is not above the served version ", current_->version));
    }
    served->version = target_version.value_or(current_->version + 1);
    result.previous = current_;
    current_ = served;
  }
  result.current = std::move(served);
  result.load_time = absl::Now() - start;
  result.total_bytes = total_bytes;
  return result;
}

}  // namespace rlhf::serving
