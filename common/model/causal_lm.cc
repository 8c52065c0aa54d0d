#include "common/model/causal_lm.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <utility>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/zeros.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/model/cpu_kernels.h"
#include "common/model/gpt2.h"
#include "common/model/llama.h"
#include "common/model/torch_boundary.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"

namespace rlhf::model {
namespace {

constexpr char kConfigFile[] = "config.json";

std::string ShapeString(at::IntArrayRef shape) { return absl::StrCat("[", absl::StrJoin(shape, ","), "]"); }

// Validates a 2-D integer tensor whose values must lie in [lo, hi); returns it as int64 on `device`.
absl::StatusOr<at::Tensor> CheckIdTensor(const at::Tensor& t, absl::string_view what, int64_t lo, int64_t hi,
                                         const c10::Device& device) {
  if (!t.defined() || t.dim() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(what, " must be a 2-D tensor [batch, seq], got ",
                                                   t.defined() ? ShapeString(t.sizes()) : "undefined"));
  }
  if (at::isFloatingType(t.scalar_type()) || at::isComplexType(t.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat(what, " must have an integer dtype"));
  }
  at::Tensor out = t.to(device, at::kLong);
  if (out.numel() > 0) {
    const int64_t min = out.min().item<int64_t>();
    const int64_t max = out.max().item<int64_t>();
    if (min < lo || max >= hi) {
      return absl::InvalidArgumentError(absl::StrCat(what, " has values in [", min, ", ", max,
                                                     "], outside the allowed range [", lo, ", ", hi, ")"));
    }
  }
  return out;
}

// Mask of attention that is NOT allowed: [batch, 1, t, start + t] bool. Query i (slot start + i) sees slot j iff
// j <= start + i and (slot j holds a real token or j is the query's own slot, so padding rows stay finite).
at::Tensor BlockedMask(const at::Tensor& key_mask, int64_t start, int64_t t) {
  const int64_t b = key_mask.size(0);
  const int64_t s = start + t;
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(key_mask.device());
  at::Tensor slots = at::arange(s, long_opts).view({1, s});
  at::Tensor queries = at::arange(start, s, long_opts).view({t, 1});
  at::Tensor future = slots > queries;
  at::Tensor own = slots == queries;
  at::Tensor visible = key_mask.view({b, 1, 1, s}).logical_or(own.view({1, 1, t, s}));
  return visible.logical_not().logical_or(future.view({1, 1, t, s}));
}

absl::Status ValidateOptions(const ModelOptions& options) {
  if (options.mv_max_batch < 0) return absl::InvalidArgumentError("ModelOptions.mv_max_batch must be >= 0");
  if (options.decode_kernel == DecodeKernel::kAvx512 && !internal::CpuHasAvx512()) {
    return absl::FailedPreconditionError("ModelOptions.decode_kernel is kAvx512 but this CPU lacks AVX-512F");
  }
  return absl::OkStatus();
}

// Memory this process may use: physical memory, or the cgroup's limit when lower.
int64_t AvailableMemoryBytes() {
  int64_t bytes = static_cast<int64_t>(::sysconf(_SC_PHYS_PAGES)) * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
  std::ifstream cgroup("/sys/fs/cgroup/memory.max");
  std::string limit;
  if (cgroup >> limit && limit != "max") {
    char* end = nullptr;
    const long long value = std::strtoll(limit.c_str(), &end, 10);
    if (end != limit.c_str() && value > 0 && value < bytes) bytes = value;
  }
  return bytes;
}

// Refuses a config whose float32 parameters cannot fit in memory, before anything is allocated.
absl::Status CheckFitsInMemory(const ModelConfig& config, absl::string_view source) {
  const double needed = static_cast<double>(config.NumParameters()) * 4.0;
  const double available = static_cast<double>(AvailableMemoryBytes());
  if (needed > available) {
    char message[256];
    std::snprintf(message, sizeof(message),
                  "the config describes %.3g parameters (%.1f GiB in float32), more than the %.1f GiB of memory "
                  "this process may use",
                  static_cast<double>(config.NumParameters()), needed / (1 << 30), available / (1 << 30));
    return absl::ResourceExhaustedError(absl::StrCat(source, ": ", message));
  }
  return absl::OkStatus();
}

constexpr char kScoreWeight[] = "score.weight";
constexpr char kScoreBias[] = "score.bias";
constexpr char kValueWeight[] = "value_head.weight";
constexpr char kValueBias[] = "value_head.bias";

bool IsHead(const std::string& name) {
  return name == kScoreWeight || name == kScoreBias || name == kValueWeight || name == kValueBias;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Parameters.

std::unique_ptr<CausalLm> CausalLm::NewModel(const ModelConfig& config, const ModelOptions& options) {
  if (config.family() == ModelFamily::kLlama) return std::unique_ptr<CausalLm>(new LlamaModel(config, options));
  return std::unique_ptr<CausalLm>(new Gpt2Model(config, options));
}

std::string CausalLm::StoredName(const std::string& name, const WeightSource& /*weights*/) const { return name; }

bool CausalLm::IsIgnoredTensor(const std::string& /*stored_name*/) const { return false; }

bool CausalLm::UseAvx512Kernel() const {
  return options_.decode_kernel != DecodeKernel::kBlas && internal::CpuHasAvx512();
}

std::vector<CausalLm::ParameterSpec> CausalLm::Specs(bool reward_head, bool value_head) const {
  std::vector<ParameterSpec> specs = BodySpecs();
  // Heads start at zero: InstructGPT's RM and PPO's value head start from zero-initialised scalar heads.
  if (reward_head) {
    specs.push_back({kScoreWeight, {1, config_.hidden_size}, Init::kZero});
    specs.push_back({kScoreBias, {1}, Init::kZero});
  }
  if (value_head) {
    specs.push_back({kValueWeight, {1, config_.hidden_size}, Init::kZero});
    specs.push_back({kValueBias, {1}, Init::kZero});
  }
  return specs;
}

void CausalLm::Allocate(const std::vector<ParameterSpec>& specs) {
  c10::InferenceMode normal_tensors(false);
  at::NoGradGuard no_grad;
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(options_.device);
  params_.clear();
  for (const ParameterSpec& spec : specs) {
    at::Tensor t = at::empty(spec.shape, opts);
    if (t.device().is_cpu() && t.nbytes() >= (size_t{4} << 20)) internal::AdviseHugePages(t.data_ptr(), t.nbytes());
    t.fill_(spec.init == Init::kOne ? 1.0 : 0.0);
    t.set_requires_grad(true);
    params_.push_back({spec.name, t});
    if (spec.name == kScoreWeight) score_w_ = t;
    if (spec.name == kScoreBias) score_b_ = t;
    if (spec.name == kValueWeight) value_w_ = t;
    if (spec.name == kValueBias) value_b_ = t;
  }
  BindParameters();
}

void CausalLm::InitializeRandom(const std::vector<ParameterSpec>& specs) {
  c10::InferenceMode normal_tensors(false);
  at::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(options_.init_seed);
  const double std = 0.02;
  const double residual_std = std / std::sqrt(2.0 * static_cast<double>(config_.num_hidden_layers));
  for (size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].init != Init::kNormal && specs[i].init != Init::kResidualNormal) continue;
    const double s = specs[i].init == Init::kNormal ? std : residual_std;
    at::Tensor& t = params_[i].tensor;
    // Drawn on CPU (the same values on every device), in place when the model is on CPU.
    if (t.device().is_cpu()) {
      t.normal_(0.0, s, gen);
    } else {
      t.copy_(at::empty(t.sizes(), at::kFloat).normal_(0.0, s, gen));
    }
  }
}

absl::Status CausalLm::CheckWeights(const WeightSource& weights, const std::vector<ParameterSpec>& specs,
                                    bool allow_missing_heads) const {
  std::set<std::string> used;
  for (const ParameterSpec& spec : specs) {
    const std::string stored = StoredName(spec.name, weights);
    if (!weights.Contains(stored)) {
      // Heads may be absent: a value head is new in PPO, a reward head is new when an RM starts from an LM, and
      // Hugging Face's classifiers have no score.bias. A classifier's score.weight is required.
      const bool required_score = spec.name == kScoreWeight && config_.IsSequenceClassifier();
      if (allow_missing_heads && IsHead(spec.name) && !required_score) continue;
      return absl::NotFoundError(absl::StrCat(weights.source(), ": tensor '", stored,
                                              "' not found (the config describes a ", config_.model_type,
                                              " model with it)"));
    }
    ASSIGN_OR_RETURN(const SafetensorsEntry entry, weights.Entry(stored));
    if (entry.shape != spec.shape) {
      return absl::InvalidArgumentError(absl::StrCat(weights.source(), ": tensor '", stored, "' has shape ",
                                                     ShapeString(entry.shape), ", the config needs ",
                                                     ShapeString(spec.shape)));
    }
    if (entry.dtype != SafetensorsDtype::kF32 && entry.dtype != SafetensorsDtype::kBF16 &&
        entry.dtype != SafetensorsDtype::kF16 && entry.dtype != SafetensorsDtype::kF64) {
      return absl::InvalidArgumentError(absl::StrCat(weights.source(), ": tensor '", stored, "' has dtype ",
                                                     SafetensorsDtypeName(entry.dtype),
                                                     "; weights must be F32, BF16 or F16"));
    }
    used.insert(stored);
  }
  std::vector<std::string> unknown;
  for (const std::string& name : weights.Names()) {
    if (used.count(name) == 0 && !IsIgnoredTensor(name) && !IsHead(name)) unknown.push_back(name);
  }
  if (!unknown.empty() && !options_.ignore_unknown_tensors) {
    const size_t total = unknown.size();
    if (unknown.size() > 5) unknown.resize(5);
    return absl::InvalidArgumentError(absl::StrCat(
        weights.source(), ": unexpected tensors '", absl::StrJoin(unknown, "', '"), "'",
        total > 5 ? absl::StrCat(" and ", total - 5, " more") : "", " for a ", config_.model_type,
        " model (set ModelOptions.ignore_unknown_tensors to skip them)"));
  }
  return absl::OkStatus();
}

absl::Status CausalLm::ReadWeights(const WeightSource& weights, bool allow_missing_heads) {
  c10::InferenceMode normal_tensors(false);
  at::NoGradGuard no_grad;
  for (NamedTensor& param : params_) {
    const std::string stored = StoredName(param.name, weights);
    if (!weights.Contains(stored) && allow_missing_heads && IsHead(param.name)) continue;
    RETURN_IF_ERROR(weights.CheckFinite(stored));
    RETURN_IF_ERROR(weights.ReadInto(stored, param.tensor));
  }
  return absl::OkStatus();
}

absl::Status CausalLm::LoadWeights(const WeightSource& weights) {
  std::vector<ParameterSpec> specs;
  for (const NamedTensor& p : params_) specs.push_back({p.name, p.tensor.sizes().vec(), Init::kZero});
  RETURN_IF_ERROR(CheckWeights(weights, specs, /*allow_missing_heads=*/true));
  absl::Status status =
      TorchBoundary("LoadWeights", [&] { return ReadWeights(weights, /*allow_missing_heads=*/true); });
  // ReadInto copies bytes without bumping the tensors' version counters: drop the derived copies explicitly
  // (also after a failure, which may have replaced some tensors).
  InvalidateDerivedWeights();
  return status;
}

std::map<std::string, at::Tensor> CausalLm::StateDict() const {
  std::map<std::string, at::Tensor> state;
  for (const NamedTensor& p : params_) state[p.name] = p.tensor;
  return state;
}

std::vector<at::Tensor> CausalLm::Parameters() const {
  std::vector<at::Tensor> out;
  out.reserve(params_.size());
  for (const NamedTensor& p : params_) out.push_back(p.tensor);
  return out;
}

int64_t CausalLm::NumParameters() const {
  int64_t n = 0;
  for (const NamedTensor& p : params_) n += p.tensor.numel();
  return n;
}

absl::Status CausalLm::SetDropout(double resid_pdrop, double embd_pdrop, double attn_pdrop) {
  ModelConfig changed = config_;
  changed.resid_pdrop = resid_pdrop;
  changed.embd_pdrop = embd_pdrop;
  changed.attn_pdrop = attn_pdrop;
  RETURN_IF_ERROR(changed.Validate());
  config_ = std::move(changed);
  return absl::OkStatus();
}

absl::Status CausalLm::Save(const std::string& dir, const std::map<std::string, std::string>& metadata,
                            int64_t max_shard_bytes) const {
  std::map<std::string, std::string> header = metadata;
  header["format"] = "pt";
  RETURN_IF_ERROR(TorchBoundary("Save", [&] {
    return WriteSafetensorsCheckpoint(dir, StateDict(), header, max_shard_bytes);
  }));
  ModelConfig saved = config_;
  saved.torch_dtype = "float32";  // what the parameters are, whatever the checkpoint they came from stored
  return saved.WriteFile(absl::StrCat(dir, "/", kConfigFile));
}

// ---------------------------------------------------------------------------------------------------------------
// Creation and loading.

absl::StatusOr<std::unique_ptr<CausalLm>> CreateModel(const ModelConfig& config, const ModelOptions& options) {
  RETURN_IF_ERROR(config.Validate());
  RETURN_IF_ERROR(ValidateOptions(options));
  const bool reward = options.reward_head || config.IsSequenceClassifier();
  if (reward && config.num_labels != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: field 'num_labels' must be 1 for a reward model, got ", config.num_labels));
  }
  RETURN_IF_ERROR(CheckFitsInMemory(config, "config"));
  std::unique_ptr<CausalLm> model = CausalLm::NewModel(config, options);
  if (reward) model->config_.architectures = {config.SequenceClassifierArchitecture()};
  const std::vector<CausalLm::ParameterSpec> specs = model->Specs(reward, options.value_head);
  RETURN_IF_ERROR(TorchBoundary("cannot create the model", [&]() -> absl::Status {
    model->Allocate(specs);
    model->InitializeRandom(specs);
    return absl::OkStatus();
  }));
  return model;
}

absl::StatusOr<std::unique_ptr<CausalLm>> LoadModel(const std::string& dir, const ModelOptions& options) {
  const std::string config_path = absl::StrCat(dir, "/", kConfigFile);
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromFile(config_path));
  RETURN_IF_ERROR(ValidateOptions(options));
  ASSIGN_OR_RETURN(std::unique_ptr<WeightSource> weights, WeightSource::OpenCheckpoint(dir));
  const bool reward = options.reward_head || config.IsSequenceClassifier() || weights->Contains(kScoreWeight);
  const bool value = options.value_head || weights->Contains(kValueWeight);
  if (reward && config.num_labels != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": field 'num_labels' must be 1 for a reward model, got ", config.num_labels));
  }
  // The weights present bound the model: at 2 bytes a parameter at least (BF16/F16), a config that claims a
  // million layers is refused before anything is allocated or even listed.
  const double claimed = static_cast<double>(config.NumParameters());
  if (claimed * 2 > static_cast<double>(weights->DataBytes())) {
    return absl::InvalidArgumentError(absl::StrCat(
        config_path, ": the config describes ", config.NumParameters(), " parameters (num_hidden_layers=",
        config.num_hidden_layers, ", hidden_size=", config.hidden_size, ", vocab_size=", config.vocab_size,
        "), more than the ", weights->DataBytes(), " bytes of weights in ", dir, " can hold"));
  }
  std::unique_ptr<CausalLm> model = CausalLm::NewModel(config, options);
  const std::vector<CausalLm::ParameterSpec> specs = model->Specs(reward, value);
  // Every parameter the config describes must be in the files with its shape before anything is allocated, so a
  // config that claims a million layers is refused by name instead of exhausting memory.
  RETURN_IF_ERROR(model->CheckWeights(*weights, specs, /*allow_missing_heads=*/true));
  RETURN_IF_ERROR(CheckFitsInMemory(config, config_path));
  RETURN_IF_ERROR(TorchBoundary(absl::StrCat("cannot load ", dir), [&]() -> absl::Status {
    model->Allocate(specs);
    return model->ReadWeights(*weights, /*allow_missing_heads=*/true);
  }));
  if (reward) model->config_.architectures = {config.SequenceClassifierArchitecture()};
  return model;
}

// ---------------------------------------------------------------------------------------------------------------
// Forward.

absl::StatusOr<ForwardOutput> CausalLm::Forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                                const ForwardOptions& options) const {
  if (options.values && !has_value_head()) {
    return absl::InvalidArgumentError("Forward: values requested but the model has no value head");
  }
  if (options.rewards && !has_reward_head()) {
    return absl::InvalidArgumentError("Forward: rewards requested but the model has no reward head");
  }
  return TorchBoundary("Forward", [&]() -> absl::StatusOr<ForwardOutput> {
    ASSIGN_OR_RETURN(at::Tensor ids, CheckIdTensor(input_ids, "input_ids", 0, config_.vocab_size, device()));
    ASSIGN_OR_RETURN(at::Tensor mask, CheckIdTensor(attention_mask, "attention_mask", 0, 2, device()));
    if (ids.sizes() != mask.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("attention_mask shape ", ShapeString(mask.sizes()),
                                                     " differs from input_ids shape ", ShapeString(ids.sizes())));
    }
    const int64_t b = ids.size(0), t = ids.size(1);
    if (b == 0 || t == 0) return absl::InvalidArgumentError("Forward: empty batch or sequence");
    at::Tensor positions = (mask.cumsum(1) - 1).clamp_min(0);
    const int64_t max_position = positions.max().item<int64_t>();
    if (max_position >= config_.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("Forward: a sequence has ", max_position + 1,
                                                     " tokens, more than max_position_embeddings=",
                                                     config_.max_position_embeddings));
    }
    at::Tensor last;
    if (options.rewards) {
      if (mask.sum(1).min().item<int64_t>() == 0) {
        return absl::InvalidArgumentError("Forward: an attention_mask row is all zeros; it has no token to score");
      }
      last = (mask * at::arange(t, mask.options())).argmax(1);  // [b] last slot whose mask is 1
    }
    at::Tensor blocked = BlockedMask(mask.to(at::kBool), 0, t);
    at::Tensor hidden = HiddenStates(ids, positions, blocked, nullptr, 0, training_);
    ForwardOutput out;
    if (options.logits) out.logits = LmHead(hidden);
    if (options.values) out.values = at::linear(hidden, value_w_, value_b_).squeeze(-1);
    if (options.rewards) {
      const int64_t h = hidden.size(2);
      at::Tensor h_last = hidden.gather(1, last.view({b, 1, 1}).expand({b, 1, h})).squeeze(1);
      out.rewards = at::linear(h_last, score_w_, score_b_).squeeze(-1);
    }
    if (options.hidden) out.hidden = std::move(hidden);
    return out;
  });
}

absl::StatusOr<at::Tensor> CausalLm::Logits(const at::Tensor& hidden) const {
  if (!hidden.defined() || hidden.dim() < 1 || hidden.size(-1) != config_.hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat("Logits: hidden must be [..., ", config_.hidden_size, "], got ",
                                                   hidden.defined() ? ShapeString(hidden.sizes()) : "undefined"));
  }
  return TorchBoundary("Logits", [&]() -> absl::StatusOr<at::Tensor> {
    return LmHead(hidden.to(device(), at::kFloat));
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Incremental decoding.

absl::Status CausalLm::ResetKvCache(int64_t batch, int64_t capacity, KvCache* cache) const {
  if (batch <= 0 || capacity <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("ResetKvCache: batch ", batch, " and capacity ", capacity,
                                                   " must be positive"));
  }
  return TorchBoundary("ResetKvCache", [&]() -> absl::Status {
    c10::InferenceMode inference;
    const auto opts = at::TensorOptions().dtype(at::kFloat).device(device());
    const int64_t layers = config_.num_hidden_layers, h = config_.num_key_value_heads, d = config_.head_dim;
    const bool fits = cache->key_storage_.defined() && cache->key_storage_.size(1) >= batch &&
                      cache->key_storage_.size(4) >= capacity && cache->key_storage_.size(0) == layers &&
                      cache->key_storage_.size(2) == h && cache->key_storage_.size(3) == d;
    if (!fits) {
      cache->key_storage_ = at::Tensor();  // free before allocating
      cache->value_storage_ = at::Tensor();
      cache->key_storage_ = at::empty({layers, batch, h, d, capacity}, opts);
      cache->value_storage_ = at::empty({layers, batch, h, capacity, d}, opts);
      for (const at::Tensor& t : {cache->key_storage_, cache->value_storage_}) {
        if (t.device().is_cpu() && t.nbytes() >= (size_t{4} << 20)) {
          internal::AdviseHugePages(t.data_ptr(), t.nbytes());
        }
      }
      cache->mask_storage_ = at::zeros({batch, capacity}, opts.dtype(at::kBool));
    }
    cache->keys_ = cache->key_storage_.narrow(1, 0, batch).narrow(4, 0, capacity);
    cache->values_ = cache->value_storage_.narrow(1, 0, batch).narrow(3, 0, capacity);
    cache->key_mask_ = cache->mask_storage_.narrow(0, 0, batch).narrow(1, 0, capacity);
    cache->key_mask_.zero_();
    if (cache->scratch_.empty() || cache->scratch_.front().size(0) != batch) {
      cache->scratch_.clear();
      ResetScratch(batch, cache);
    }
    cache->batch_ = batch;
    cache->capacity_ = capacity;
    cache->length_ = 0;
    return absl::OkStatus();
  });
}

absl::StatusOr<at::Tensor> CausalLm::Extend(const at::Tensor& input_ids, const at::Tensor& positions,
                                            const at::Tensor& mask, KvCache* cache) const {
  if (cache == nullptr || cache->batch_ == 0) return absl::FailedPreconditionError("Extend: call ResetKvCache first");
  return TorchBoundary("Extend", [&]() -> absl::StatusOr<at::Tensor> {
    ASSIGN_OR_RETURN(at::Tensor ids, CheckIdTensor(input_ids, "input_ids", 0, config_.vocab_size, device()));
    ASSIGN_OR_RETURN(at::Tensor pos,
                     CheckIdTensor(positions, "positions", 0, config_.max_position_embeddings, device()));
    ASSIGN_OR_RETURN(at::Tensor m, CheckIdTensor(mask, "mask", 0, 2, device()));
    if (ids.sizes() != pos.sizes() || ids.sizes() != m.sizes() || ids.size(0) != cache->batch_ ||
        ids.size(1) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Extend: input_ids ", ShapeString(ids.sizes()), ", positions ", ShapeString(pos.sizes()), " and mask ",
          ShapeString(m.sizes()), " must all be [", cache->batch_, ", t] with t >= 1"));
    }
    const int64_t t = ids.size(1);
    const int64_t start = cache->length_;
    if (start + t > cache->capacity_) {
      return absl::OutOfRangeError(absl::StrCat("Extend: ", start, " + ", t, " slots exceed the cache capacity ",
                                                cache->capacity_));
    }
    c10::InferenceMode inference;
    cache->key_mask_.narrow(1, start, t).copy_(m);
    at::Tensor logits;
    if (t == 1 && device().is_cpu()) {
      logits = DecodeStepCpu(ids, pos, cache);
    } else {
      at::Tensor blocked = BlockedMask(cache->key_mask_.narrow(1, 0, start + t), start, t);
      at::Tensor hidden = HiddenStates(ids, pos, blocked, cache, start, false);
      logits = LmHead(hidden.select(1, t - 1));
    }
    cache->length_ = start + t;
    return logits;
  });
}

absl::Status CausalLm::KeepKvCacheRows(const std::vector<int64_t>& rows, KvCache* cache) const {
  if (cache == nullptr || cache->batch_ == 0) {
    return absl::FailedPreconditionError("KeepKvCacheRows: call ResetKvCache first");
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] < 0 || rows[i] >= cache->batch_ || (i > 0 && rows[i] <= rows[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat("KeepKvCacheRows: rows must be strictly increasing in [0, ",
                                                     cache->batch_, "), got [", absl::StrJoin(rows, ","), "]"));
    }
  }
  if (rows.empty()) return absl::InvalidArgumentError("KeepKvCacheRows: no rows to keep");
  return TorchBoundary("KeepKvCacheRows", [&]() -> absl::Status {
    c10::InferenceMode inference;
    const int64_t n = static_cast<int64_t>(rows.size());
    const int64_t filled = cache->length_;
    for (int64_t i = 0; i < n; ++i) {
      if (rows[i] == i) continue;
      if (filled > 0) {
        cache->keys_.select(1, i).narrow(3, 0, filled).copy_(cache->keys_.select(1, rows[i]).narrow(3, 0, filled));
        cache->values_.select(1, i).narrow(2, 0, filled).copy_(
            cache->values_.select(1, rows[i]).narrow(2, 0, filled));
      }
      cache->key_mask_.select(0, i).copy_(cache->key_mask_.select(0, rows[i]));
    }
    cache->keys_ = cache->keys_.narrow(1, 0, n);
    cache->values_ = cache->values_.narrow(1, 0, n);
    cache->key_mask_ = cache->key_mask_.narrow(0, 0, n);
    for (at::Tensor& t : cache->scratch_) t = t.narrow(0, 0, n);
    cache->batch_ = n;
    return absl::OkStatus();
  });
}

}  // namespace rlhf::model
