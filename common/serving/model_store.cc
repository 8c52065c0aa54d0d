#include "common/serving/model_store.h"

#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include "absl/strings/str_cat.h"
#include "common/model/causal_lm.h"
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

absl::StatusOr<model::ModelOptions> MakeModelOptions(const ModelStoreOptions& options) {
  model::ModelOptions model_options;
  try {
    model_options.device = c10::Device(options.device);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("--device: '", options.device, "' is not a LibTorch device"));
  }
  model_options.mv_max_batch = options.mv_max_batch;
  return model_options;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelStore>> ModelStore::Load(const ModelStoreOptions& options) {
  if (options.model_dir.empty()) return absl::InvalidArgumentError("--model: no model folder given");
  std::unique_ptr<ModelStore> store(new ModelStore(options));
  if (store->options_.model_name.empty()) store->options_.model_name = LastComponent(options.model_dir);
  ASSIGN_OR_RETURN(model::ModelOptions model_options, MakeModelOptions(options));
  ASSIGN_OR_RETURN(std::unique_ptr<model::CausalLm> model, model::LoadModel(options.model_dir, model_options));
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
  store->codec_.tokenizer = store->tokenizer_.get();
  if (store->tokenizer_ != nullptr) {
    auto chat_template = tokenizer::ChatTemplate::Load(options.model_dir);
    if (chat_template.ok()) {
      store->chat_template_ = *std::move(chat_template);
      store->codec_.chat_template = store->chat_template_.get();
      store->codec_.chat_template_status = absl::OkStatus();
      store->codec_.DeriveEndOfTurnId();
    } else {
      store->codec_.chat_template_status = chat_template.status();
    }
  } else {
    store->codec_.chat_template_status = absl::NotFoundError("the model folder has no tokenizer");
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
  ASSIGN_OR_RETURN(const model::ModelConfig config, model::ModelConfig::FromFile(dir + "/config.json"));
  RETURN_IF_ERROR(model::CheckSameArchitecture(config_, config));
  ASSIGN_OR_RETURN(model::ModelOptions model_options, MakeModelOptions(options_));
  ASSIGN_OR_RETURN(std::unique_ptr<model::CausalLm> model, model::LoadModel(dir, model_options));
  if (options_.require_reward_head && !model->has_reward_head()) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir, " has no reward head (score.weight): not a reward model"));
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
  const std::unique_ptr<model::WeightSource> weights = model::WeightSource::FromFile(std::move(file));
  ASSIGN_OR_RETURN(model::ModelOptions model_options, MakeModelOptions(options_));
  const auto current = Current();
  // A fresh model of the served architecture (with the same heads), then every parameter from the payload.
  model_options.reward_head = current->model->has_reward_head();
  model_options.value_head = current->model->has_value_head();
  ASSIGN_OR_RETURN(std::unique_ptr<model::CausalLm> model, model::CreateModel(config_, model_options));
  if (absl::Status loaded = model->LoadWeights(*weights); !loaded.ok()) {
    // A payload without one of the parameters is a bad payload (the API's INVALID_ARGUMENT naming the tensor), not
    // a missing resource.
    if (absl::IsNotFound(loaded)) return absl::InvalidArgumentError(loaded.message());
    return loaded;
  }
  return Install(std::move(model), source, target_version, std::move(metadata), start, total_bytes);
}

absl::StatusOr<ModelStore::SwapResult> ModelStore::Install(std::shared_ptr<model::CausalLm> model,
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
