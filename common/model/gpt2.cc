#include "common/model/gpt2.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <utility>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/addmv.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/mv.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/zeros.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/model/cpu_kernels.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"

namespace rlhf::model {
namespace {

constexpr char kPrefix[] = "transformer.";
constexpr char kConfigFile[] = "config.json";
constexpr char kWeightsFile[] = "model.safetensors";

std::string ShapeString(at::IntArrayRef shape) { return absl::StrCat("[", absl::StrJoin(shape, ","), "]"); }

absl::Status TorchError(absl::string_view what, const c10::Error& e) {
  return absl::InternalError(absl::StrCat(what, ": ", e.what_without_backtrace()));
}

// Validates a 2-D integer tensor whose values must lie in [lo, hi); returns it as int64 on `device`.
absl::StatusOr<at::Tensor> CheckIds(const at::Tensor& t, absl::string_view what, int64_t lo, int64_t hi,
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

// at::empty for long-lived buffers (weights, caches): big CPU ones get transparent huge pages before first touch.
at::Tensor EmptyLongLived(at::IntArrayRef shape, const at::TensorOptions& options) {
  at::Tensor t = at::empty(shape, options);
  if (t.device().is_cpu() && t.nbytes() >= (size_t{4} << 20)) internal::AdviseHugePages(t.data_ptr(), t.nbytes());
  return t;
}

absl::Status ValidateOptions(const Gpt2Options& options) {
  if (options.mv_max_batch < 0) return absl::InvalidArgumentError("Gpt2Options.mv_max_batch must be >= 0");
  if (options.decode_kernel == DecodeKernel::kAvx512 && !internal::CpuHasAvx512()) {
    return absl::FailedPreconditionError("Gpt2Options.decode_kernel is kAvx512 but this CPU lacks AVX-512F");
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Construction, loading, saving.

void Gpt2Model::AllocateParameters(bool reward_head, bool value_head) {
  c10::InferenceMode normal_tensors(false);
  at::NoGradGuard no_grad;
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(options_.device);
  const int64_t e = config_.n_embd;
  const int64_t inner = config_.inner_dim();
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool ones = false) {
    at::Tensor t = EmptyLongLived(shape, opts);
    t.fill_(ones ? 1.0 : 0.0);
    t.set_requires_grad(true);
    params_.push_back({name, t});
    return t;
  };
  const std::string p = kPrefix;
  wte_ = add(p + "wte.weight", {config_.vocab_size, e});
  wpe_ = add(p + "wpe.weight", {config_.n_positions, e});
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    const std::string h = absl::StrCat(p, "h.", l, ".");
    Block b;
    b.ln_1_w = add(h + "ln_1.weight", {e}, true);
    b.ln_1_b = add(h + "ln_1.bias", {e});
    b.attn_w = add(h + "attn.c_attn.weight", {e, 3 * e});
    b.attn_b = add(h + "attn.c_attn.bias", {3 * e});
    b.attn_proj_w = add(h + "attn.c_proj.weight", {e, e});
    b.attn_proj_b = add(h + "attn.c_proj.bias", {e});
    b.ln_2_w = add(h + "ln_2.weight", {e}, true);
    b.ln_2_b = add(h + "ln_2.bias", {e});
    b.fc_w = add(h + "mlp.c_fc.weight", {e, inner});
    b.fc_b = add(h + "mlp.c_fc.bias", {inner});
    b.mlp_proj_w = add(h + "mlp.c_proj.weight", {inner, e});
    b.mlp_proj_b = add(h + "mlp.c_proj.bias", {e});
    blocks_.push_back(std::move(b));
  }
  ln_f_w_ = add(p + "ln_f.weight", {e}, true);
  ln_f_b_ = add(p + "ln_f.bias", {e});
  if (reward_head) {
    score_w_ = add("score.weight", {1, e});
    score_b_ = add("score.bias", {1});
  }
  if (value_head) {
    value_w_ = add("value_head.weight", {1, e});
    value_b_ = add("value_head.bias", {1});
  }
  decode_copies_.assign(blocks_.size(), DecodeCopies{});
}

void Gpt2Model::InitializeRandom() {
  c10::InferenceMode normal_tensors(false);
  at::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(options_.init_seed);
  const double std = 0.02;
  const double residual_std = std / std::sqrt(2.0 * static_cast<double>(config_.n_layer));
  // Drawn on CPU (the same values on every device), in place when the model is on CPU.
  auto normal = [&](at::Tensor& t, double s) {
    if (t.device().is_cpu()) {
      t.normal_(0.0, s, gen);
    } else {
      t.copy_(at::empty(t.sizes(), at::kFloat).normal_(0.0, s, gen));
    }
  };
  normal(wte_, std);
  normal(wpe_, std);
  for (Block& b : blocks_) {
    normal(b.attn_w, std);
    normal(b.attn_proj_w, residual_std);
    normal(b.fc_w, std);
    normal(b.mlp_proj_w, residual_std);
  }
  // Heads stay zero: InstructGPT's RM and PPO's value head start from zero-initialised scalar heads.
}

absl::StatusOr<std::unique_ptr<Gpt2Model>> Gpt2Model::Create(const Gpt2Config& config, const Gpt2Options& options) {
  RETURN_IF_ERROR(config.Validate());
  RETURN_IF_ERROR(ValidateOptions(options));
  const bool reward = options.reward_head || config.IsSequenceClassifier();
  if (reward && config.num_labels != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: field 'num_labels' must be 1 for a reward model, got ", config.num_labels));
  }
  std::unique_ptr<Gpt2Model> model(new Gpt2Model(config, options));
  if (reward) model->config_.architectures = {kGpt2SequenceClassificationArchitecture};
  try {
    model->AllocateParameters(reward, options.value_head);
    model->InitializeRandom();
  } catch (const c10::Error& e) {
    return TorchError("cannot create the model", e);
  }
  return model;
}

absl::StatusOr<std::unique_ptr<Gpt2Model>> Gpt2Model::Load(const std::string& dir, const Gpt2Options& options) {
  ASSIGN_OR_RETURN(Gpt2Config config, Gpt2Config::FromFile(absl::StrCat(dir, "/", kConfigFile)));
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                   SafetensorsFile::Open(absl::StrCat(dir, "/", kWeightsFile)));
  RETURN_IF_ERROR(ValidateOptions(options));
  const bool reward = options.reward_head || config.IsSequenceClassifier() || file->Contains("score.weight");
  const bool value = options.value_head || file->Contains("value_head.weight");
  if (reward && config.num_labels != 1) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/", kConfigFile,
                                                   ": field 'num_labels' must be 1 for a reward model, got ",
                                                   config.num_labels));
  }
  std::unique_ptr<Gpt2Model> model(new Gpt2Model(config, options));
  try {
    model->AllocateParameters(reward, value);
  } catch (const c10::Error& e) {
    return TorchError("cannot allocate the model", e);
  }
  // While assigning, the config says what the checkpoint is (a language model may lack score.weight); after it,
  // what the model is.
  RETURN_IF_ERROR(model->AssignFrom(*file, /*allow_missing_heads=*/true));
  if (reward) model->config_.architectures = {kGpt2SequenceClassificationArchitecture};
  return model;
}

absl::Status Gpt2Model::AssignFrom(const SafetensorsFile& file, bool allow_missing_heads) {
  std::string prefix;
  if (file.Contains(absl::StrCat(kPrefix, "wte.weight"))) {
    prefix = kPrefix;
  } else if (!file.Contains("wte.weight")) {
    return absl::NotFoundError(
        absl::StrCat(file.source(), ": tensor 'transformer.wte.weight' (or 'wte.weight') not found: not a GPT-2 "
                                    "checkpoint?"));
  }
  const std::string p = kPrefix;
  std::set<std::string> used;
  c10::InferenceMode normal_tensors(false);
  at::NoGradGuard no_grad;
  for (NamedTensor& param : params_) {
    const bool body = absl::StartsWith(param.name, p);
    const std::string stored = body ? prefix + param.name.substr(p.size()) : param.name;
    // Heads may be absent: a value head is new in PPO, a reward head is new when an RM starts from an LM, and
    // Hugging Face's GPT2ForSequenceClassification has no score.bias.
    const bool optional = !body && (param.name != "score.weight" || !config_.IsSequenceClassifier());
    if (!file.Contains(stored)) {
      if (optional && allow_missing_heads) continue;
      return absl::NotFoundError(absl::StrCat(file.source(), ": tensor '", stored, "' not found"));
    }
    RETURN_IF_ERROR(file.ReadInto(stored, param.tensor));
    used.insert(stored);
  }
  std::vector<std::string> unknown;
  for (const std::string& name : file.Names()) {
    if (used.count(name) > 0) continue;
    if (absl::EndsWith(name, ".attn.bias") || absl::EndsWith(name, ".attn.masked_bias") || name == "lm_head.weight") {
      continue;  // causal-mask buffers of old checkpoints; the LM head is tied to wte
    }
    unknown.push_back(name);
  }
  if (!unknown.empty() && !options_.ignore_unknown_tensors) {
    if (unknown.size() > 5) unknown.resize(5);
    return absl::InvalidArgumentError(
        absl::StrCat(file.source(), ": unexpected tensors '", absl::StrJoin(unknown, "', '"),
                     "' (set Gpt2Options.ignore_unknown_tensors to skip them)"));
  }
  return absl::OkStatus();
}

absl::Status Gpt2Model::LoadWeights(const SafetensorsFile& file) {
  absl::Status status = AssignFrom(file, /*allow_missing_heads=*/true);
  // ReadInto copies bytes without bumping the tensors' version counters: drop the derived copies explicitly
  // (also after a failure, which may have replaced some tensors).
  std::lock_guard<std::mutex> lock(decode_copies_mu_);
  for (DecodeCopies& c : decode_copies_) c = DecodeCopies{};
  wte_t_ = at::Tensor();
  wte_t_version_ = -1;
  return status;
}

std::map<std::string, at::Tensor> Gpt2Model::StateDict() const {
  std::map<std::string, at::Tensor> state;
  for (const NamedTensor& p : params_) state[p.name] = p.tensor;
  return state;
}

absl::Status Gpt2Model::Save(const std::string& dir, const std::map<std::string, std::string>& metadata) const {
  RETURN_IF_ERROR(util::MakeDirectories(dir));
  std::map<std::string, std::string> header = metadata;
  header["format"] = "pt";
  RETURN_IF_ERROR(WriteSafetensors(absl::StrCat(dir, "/", kWeightsFile), StateDict(), header));
  return config_.WriteFile(absl::StrCat(dir, "/", kConfigFile));
}

absl::Status Gpt2Model::SetDropout(double resid_pdrop, double embd_pdrop, double attn_pdrop) {
  Gpt2Config changed = config_;
  changed.resid_pdrop = resid_pdrop;
  changed.embd_pdrop = embd_pdrop;
  changed.attn_pdrop = attn_pdrop;
  RETURN_IF_ERROR(changed.Validate());
  config_ = std::move(changed);
  return absl::OkStatus();
}

std::vector<at::Tensor> Gpt2Model::Parameters() const {
  std::vector<at::Tensor> out;
  out.reserve(params_.size());
  for (const NamedTensor& p : params_) out.push_back(p.tensor);
  return out;
}

int64_t Gpt2Model::NumParameters() const {
  int64_t n = 0;
  for (const NamedTensor& p : params_) n += p.tensor.numel();
  return n;
}

// ---------------------------------------------------------------------------------------------------------------
// Full forward (training and scoring).

at::Tensor Gpt2Model::Embed(const at::Tensor& ids, const at::Tensor& positions, bool dropout) const {
  at::Tensor x = at::embedding(wte_, ids) + at::embedding(wpe_, positions);
  if (dropout && config_.embd_pdrop > 0) x = at::dropout(x, config_.embd_pdrop, true);
  return x;
}

void Gpt2Model::Activation(at::Tensor& x) const {
  const std::string& f = config_.activation_function;
  if (f == "gelu_new" || f == "gelu_pytorch_tanh") {
    at::gelu_(x, "tanh");
  } else if (f == "gelu") {
    at::gelu_(x);
  } else {
    at::relu_(x);
  }
}

bool Gpt2Model::UseKernelWithoutGrad() const {
  return device().is_cpu() && UseAvx512Kernel() && !at::GradMode::is_enabled();
}

at::Tensor Gpt2Model::Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) const {
  if (!UseKernelWithoutGrad()) return at::addmm(bias, x, w);
  at::Tensor in = x.contiguous();
  at::Tensor out = at::empty({in.size(0), w.size(1)}, in.options());
  internal::SmallGemmAvx512(in.data_ptr<float>(), in.size(1), w.data_ptr<float>(), w.size(1), bias.data_ptr<float>(),
                            out.data_ptr<float>(), out.size(1), in.size(0), in.size(1), w.size(1));
  return out;
}

at::Tensor Gpt2Model::LmHead(const at::Tensor& hidden) const {
  if (!UseKernelWithoutGrad()) return at::matmul(hidden, wte_.t());
  at::Tensor in = hidden.reshape({-1, config_.n_embd}).contiguous();
  const at::Tensor& wte_t = EnsureTransposedWte();
  at::Tensor out = at::empty({in.size(0), config_.vocab_size}, in.options());
  internal::SmallGemmAvx512(in.data_ptr<float>(), in.size(1), wte_t.data_ptr<float>(), wte_t.size(1), nullptr,
                            out.data_ptr<float>(), out.size(1), in.size(0), in.size(1), config_.vocab_size);
  std::vector<int64_t> shape = hidden.sizes().vec();
  shape.back() = config_.vocab_size;
  return out.view(shape);
}

at::Tensor Gpt2Model::RunBlocks(at::Tensor x, const at::Tensor& blocked, KvCache* cache, int64_t start,
                                bool dropout) const {
  const int64_t b = x.size(0), t = x.size(1), e = config_.n_embd, h = config_.n_head, d = config_.head_dim();
  const double eps = config_.layer_norm_epsilon;
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    const Block& blk = blocks_[l];
    at::Tensor hs = at::layer_norm(x, {e}, blk.ln_1_w, blk.ln_1_b, eps);
    at::Tensor qkv = Linear(hs.reshape({b * t, e}), blk.attn_w, blk.attn_b).view({b, t, 3, h, d});
    double scale = 1.0 / std::sqrt(static_cast<double>(d));
    if (config_.scale_attn_by_inverse_layer_idx) scale /= static_cast<double>(l + 1);
    at::Tensor q = qkv.select(2, 0).permute({0, 2, 1, 3}) * scale;  // [b, h, t, d]
    at::Tensor k = qkv.select(2, 1).permute({0, 2, 1, 3});
    at::Tensor v = qkv.select(2, 2).permute({0, 2, 1, 3});
    at::Tensor k_t = k.transpose(-1, -2);  // [b, h, d, t]
    if (cache != nullptr) {
      cache->keys_[l].narrow(3, start, t).copy_(k_t);
      cache->values_[l].narrow(2, start, t).copy_(v);
      k_t = cache->keys_[l].narrow(3, 0, start + t);
      v = cache->values_[l].narrow(2, 0, start + t);
    }
    at::Tensor att = at::matmul(q, k_t);  // [b, h, t, s]
    att = at::softmax(att.masked_fill(blocked, -std::numeric_limits<float>::infinity()), -1);
    if (dropout && config_.attn_pdrop > 0) att = at::dropout(att, config_.attn_pdrop, true);
    at::Tensor y = at::matmul(att, v).permute({0, 2, 1, 3}).reshape({b * t, e});
    y = Linear(y, blk.attn_proj_w, blk.attn_proj_b).view({b, t, e});
    if (dropout && config_.resid_pdrop > 0) y = at::dropout(y, config_.resid_pdrop, true);
    x = x + y;
    hs = at::layer_norm(x, {e}, blk.ln_2_w, blk.ln_2_b, eps);
    at::Tensor m = Linear(hs.reshape({b * t, e}), blk.fc_w, blk.fc_b);
    const std::string& f = config_.activation_function;
    m = f == "gelu" ? at::gelu(m) : f == "relu" ? at::relu(m) : at::gelu(m, "tanh");
    m = Linear(m, blk.mlp_proj_w, blk.mlp_proj_b).view({b, t, e});
    if (dropout && config_.resid_pdrop > 0) m = at::dropout(m, config_.resid_pdrop, true);
    x = x + m;
  }
  return at::layer_norm(x, {e}, ln_f_w_, ln_f_b_, eps);
}

absl::StatusOr<ForwardOutput> Gpt2Model::Forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                                 const ForwardOptions& options) const {
  if (options.values && !has_value_head()) {
    return absl::InvalidArgumentError("Forward: values requested but the model has no value head");
  }
  if (options.rewards && !has_reward_head()) {
    return absl::InvalidArgumentError("Forward: rewards requested but the model has no reward head");
  }
  ASSIGN_OR_RETURN(at::Tensor ids, CheckIds(input_ids, "input_ids", 0, config_.vocab_size, device()));
  ASSIGN_OR_RETURN(at::Tensor mask, CheckIds(attention_mask, "attention_mask", 0, 2, device()));
  if (ids.sizes() != mask.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat("attention_mask shape ", ShapeString(mask.sizes()),
                                                   " differs from input_ids shape ", ShapeString(ids.sizes())));
  }
  const int64_t b = ids.size(0), t = ids.size(1);
  if (b == 0 || t == 0) return absl::InvalidArgumentError("Forward: empty batch or sequence");
  try {
    at::Tensor positions = (mask.cumsum(1) - 1).clamp_min(0);
    const int64_t max_position = positions.max().item<int64_t>();
    if (max_position >= config_.n_positions) {
      return absl::InvalidArgumentError(absl::StrCat("Forward: a sequence has ", max_position + 1,
                                                     " tokens, more than n_positions=", config_.n_positions));
    }
    at::Tensor last;
    if (options.rewards) {
      at::Tensor real = mask.sum(1);
      if (real.min().item<int64_t>() == 0) {
        return absl::InvalidArgumentError("Forward: an attention_mask row is all zeros; it has no token to score");
      }
      last = (mask * at::arange(t, mask.options())).argmax(1);  // [b] last slot whose mask is 1
    }
    at::Tensor blocked = BlockedMask(mask.to(at::kBool), 0, t);
    at::Tensor hidden = RunBlocks(Embed(ids, positions, training_), blocked, nullptr, 0, training_);
    ForwardOutput out;
    if (options.logits) out.logits = LmHead(hidden);
    if (options.values) out.values = at::linear(hidden, value_w_, value_b_).squeeze(-1);
    if (options.rewards) {
      at::Tensor h_last = hidden.gather(1, last.view({b, 1, 1}).expand({b, 1, config_.n_embd})).squeeze(1);
      out.rewards = at::linear(h_last, score_w_, score_b_).squeeze(-1);
    }
    if (options.hidden) out.hidden = std::move(hidden);
    return out;
  } catch (const c10::Error& e) {
    return TorchError("Forward failed", e);
  }
}

absl::StatusOr<at::Tensor> Gpt2Model::Logits(const at::Tensor& hidden) const {
  if (!hidden.defined() || hidden.dim() < 1 || hidden.size(-1) != config_.n_embd) {
    return absl::InvalidArgumentError(absl::StrCat("Logits: hidden must be [..., ", config_.n_embd, "], got ",
                                                   hidden.defined() ? ShapeString(hidden.sizes()) : "undefined"));
  }
  try {
    return LmHead(hidden.to(device(), at::kFloat));
  } catch (const c10::Error& e) {
    return TorchError("Logits failed", e);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Incremental decoding.

absl::Status Gpt2Model::ResetKvCache(int64_t batch, int64_t capacity, KvCache* cache) const {
  if (batch <= 0 || capacity <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("ResetKvCache: batch ", batch, " and capacity ", capacity,
                                                   " must be positive"));
  }
  try {
    c10::InferenceMode inference;
    const auto opts = at::TensorOptions().dtype(at::kFloat).device(device());
    const int64_t layers = config_.n_layer, h = config_.n_head, d = config_.head_dim();
    const bool fits = cache->key_storage_.defined() && cache->key_storage_.size(1) >= batch &&
                      cache->key_storage_.size(4) >= capacity;
    if (!fits) {
      cache->key_storage_ = at::Tensor();  // free before allocating
      cache->value_storage_ = at::Tensor();
      cache->key_storage_ = EmptyLongLived({layers, batch, h, d, capacity}, opts);
      cache->value_storage_ = EmptyLongLived({layers, batch, h, capacity, d}, opts);
      cache->mask_storage_ = at::zeros({batch, capacity}, opts.dtype(at::kBool));
    }
    cache->keys_ = cache->key_storage_.narrow(1, 0, batch).narrow(4, 0, capacity);
    cache->values_ = cache->value_storage_.narrow(1, 0, batch).narrow(3, 0, capacity);
    cache->key_mask_ = cache->mask_storage_.narrow(0, 0, batch).narrow(1, 0, capacity);
    cache->key_mask_.zero_();
    if (!cache->x_.defined() || cache->x_.size(0) != batch) {
      const int64_t e = config_.n_embd;
      cache->x_ = at::empty({batch, e}, opts);
      cache->h_ = at::empty({batch, e}, opts);
      cache->qkv_ = at::empty({batch, 3 * e}, opts);
      cache->attn_ = at::empty({batch, e}, opts);
      cache->proj_ = at::empty({batch, e}, opts);
      cache->fc_ = at::empty({batch, config_.inner_dim()}, opts);
      cache->logits_ = EmptyLongLived({batch, config_.vocab_size}, opts);
    }
    cache->batch_ = batch;
    cache->capacity_ = capacity;
    cache->length_ = 0;
  } catch (const c10::Error& e) {
    return TorchError("ResetKvCache failed", e);
  }
  return absl::OkStatus();
}

bool Gpt2Model::UseAvx512Kernel() const {
  return options_.decode_kernel != DecodeKernel::kBlas && internal::CpuHasAvx512();
}

const at::Tensor& Gpt2Model::EnsureTransposedWte() const {
  std::lock_guard<std::mutex> lock(decode_copies_mu_);
  const int64_t version = wte_._version();
  if (!wte_t_.defined() || wte_t_version_ != version) {
    wte_t_ = EmptyLongLived({config_.n_embd, config_.vocab_size}, wte_.options().requires_grad(false));
    internal::Transpose(wte_.data_ptr<float>(), config_.vocab_size, config_.n_embd, wte_t_.data_ptr<float>());
    wte_t_version_ = version;
  }
  return wte_t_;
}

const std::vector<Gpt2Model::DecodeCopies>& Gpt2Model::EnsureDecodeCopies() const {
  std::lock_guard<std::mutex> lock(decode_copies_mu_);
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const Block& b = blocks_[l];
    DecodeCopies& c = decode_copies_[l];
    const at::Tensor* sources[4] = {&b.attn_w, &b.attn_proj_w, &b.fc_w, &b.mlp_proj_w};
    at::Tensor* copies[4] = {&c.attn_w, &c.attn_proj_w, &c.fc_w, &c.mlp_proj_w};
    for (int i = 0; i < 4; ++i) {
      const int64_t version = sources[i]->_version();
      if (copies[i]->defined() && c.versions[i] == version) continue;
      const int64_t rows = sources[i]->size(0), cols = sources[i]->size(1);
      *copies[i] = EmptyLongLived({cols, rows}, sources[i]->options().requires_grad(false));  // [out, in]
      internal::Transpose(sources[i]->data_ptr<float>(), rows, cols, copies[i]->data_ptr<float>());
      c.versions[i] = version;
    }
  }
  return decode_copies_;
}

at::Tensor Gpt2Model::DecodeStepCpu(const at::Tensor& ids, const at::Tensor& positions, KvCache* cache) const {
  const int64_t b = cache->batch_, e = config_.n_embd, h = config_.n_head, d = config_.head_dim();
  const int64_t slot = cache->length_;
  const float eps = static_cast<float>(config_.layer_norm_epsilon);
  const bool avx512 = UseAvx512Kernel();
  const bool use_mv = !avx512 && b <= options_.mv_max_batch;
  const std::vector<DecodeCopies>* copies = use_mv ? &EnsureDecodeCopies() : nullptr;
  at::Tensor &x = cache->x_, &hs = cache->h_, &qkv = cache->qkv_, &attn = cache->attn_, &proj = cache->proj_,
             &fc = cache->fc_;

  // out[r, :] = in[r, :] @ w_io + bias: our kernel on the [in, out] parameter, or BLAS (mv by rows on the
  // [out, in] copy, or one addmm).
  auto linear = [&](const at::Tensor& in, const at::Tensor& w_io, const at::Tensor* w_oi, const at::Tensor& bias,
                    at::Tensor& out) {
    if (avx512) {
      internal::SmallGemmAvx512(in.data_ptr<float>(), in.stride(0), w_io.data_ptr<float>(), w_io.size(1),
                                bias.data_ptr<float>(), out.data_ptr<float>(), out.stride(0), b, w_io.size(0),
                                w_io.size(1));
    } else if (use_mv) {
      for (int64_t r = 0; r < b; ++r) {
        at::Tensor row = out.select(0, r);
        at::addmv_out(row, bias, *w_oi, in.select(0, r));
      }
    } else {
      at::addmm_out(out, bias, in, w_io);
    }
  };
  auto layer_norm = [&](const at::Tensor& in, const at::Tensor& w, const at::Tensor& bias, at::Tensor& out) {
    internal::LayerNormRows(in.data_ptr<float>(), w.data_ptr<float>(), bias.data_ptr<float>(), eps, b, e,
                            out.data_ptr<float>());
  };

  at::index_select_out(x, wte_, 0, ids.view({b}));
  at::index_select_out(proj, wpe_, 0, positions.view({b}));
  x.add_(proj);
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    const Block& blk = blocks_[l];
    const DecodeCopies* c = use_mv ? &(*copies)[l] : nullptr;
    layer_norm(x, blk.ln_1_w, blk.ln_1_b, hs);
    linear(hs, blk.attn_w, c ? &c->attn_w : nullptr, blk.attn_b, qkv);
    at::Tensor keys_t = cache->keys_[l];  // [b, h, d, capacity]
    at::Tensor values = cache->values_[l];  // [b, h, capacity, d]
    keys_t.select(3, slot).copy_(qkv.narrow(1, e, e).view({b, h, d}));
    values.select(2, slot).copy_(qkv.narrow(1, 2 * e, e).view({b, h, d}));
    internal::DecodeAttentionArgs args;
    args.q = qkv.data_ptr<float>();
    args.q_row_stride = qkv.stride(0);
    args.keys_t = keys_t.data_ptr<float>();
    args.k_row = keys_t.stride(0);
    args.k_head = keys_t.stride(1);
    args.k_dim = keys_t.stride(2);
    args.values = values.data_ptr<float>();
    args.v_row = values.stride(0);
    args.v_head = values.stride(1);
    args.v_slot = values.stride(2);
    args.allowed = cache->key_mask_.data_ptr<bool>();
    args.allowed_row = cache->key_mask_.stride(0);
    args.out = attn.data_ptr<float>();
    args.out_row_stride = attn.stride(0);
    args.rows = b;
    args.heads = h;
    args.head_dim = d;
    args.slots = slot + 1;
    args.scale = 1.0f / std::sqrt(static_cast<float>(d));
    if (config_.scale_attn_by_inverse_layer_idx) args.scale /= static_cast<float>(l + 1);
    internal::DecodeAttention(args);
    linear(attn, blk.attn_proj_w, c ? &c->attn_proj_w : nullptr, blk.attn_proj_b, proj);
    x.add_(proj);
    layer_norm(x, blk.ln_2_w, blk.ln_2_b, hs);
    linear(hs, blk.fc_w, c ? &c->fc_w : nullptr, blk.fc_b, fc);
    Activation(fc);
    linear(fc, blk.mlp_proj_w, c ? &c->mlp_proj_w : nullptr, blk.mlp_proj_b, proj);
    x.add_(proj);
  }
  layer_norm(x, ln_f_w_, ln_f_b_, hs);
  at::Tensor& logits = cache->logits_;
  if (avx512) {
    const at::Tensor& wte_t = EnsureTransposedWte();  // [n_embd, vocab]
    internal::SmallGemmAvx512(hs.data_ptr<float>(), hs.stride(0), wte_t.data_ptr<float>(), wte_t.size(1), nullptr,
                              logits.data_ptr<float>(), logits.stride(0), b, e, config_.vocab_size);
  } else if (use_mv) {
    for (int64_t r = 0; r < b; ++r) {
      at::Tensor row = logits.select(0, r);
      at::mv_out(row, wte_, hs.select(0, r));
    }
  } else {
    at::mm_out(logits, hs, wte_.t());
  }
  return logits;
}

absl::StatusOr<at::Tensor> Gpt2Model::Extend(const at::Tensor& input_ids, const at::Tensor& positions,
                                             const at::Tensor& mask, KvCache* cache) const {
  if (cache == nullptr || cache->batch_ == 0) return absl::FailedPreconditionError("Extend: call ResetKvCache first");
  ASSIGN_OR_RETURN(at::Tensor ids, CheckIds(input_ids, "input_ids", 0, config_.vocab_size, device()));
  ASSIGN_OR_RETURN(at::Tensor pos, CheckIds(positions, "positions", 0, config_.n_positions, device()));
  ASSIGN_OR_RETURN(at::Tensor m, CheckIds(mask, "mask", 0, 2, device()));
  if (ids.sizes() != pos.sizes() || ids.sizes() != m.sizes() || ids.size(0) != cache->batch_ || ids.size(1) == 0) {
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
  try {
    c10::InferenceMode inference;
    cache->key_mask_.narrow(1, start, t).copy_(m);
    at::Tensor logits;
    if (t == 1 && device().is_cpu()) {
      logits = DecodeStepCpu(ids, pos, cache);
    } else {
      at::Tensor blocked = BlockedMask(cache->key_mask_.narrow(1, 0, start + t), start, t);
      at::Tensor hidden = RunBlocks(Embed(ids, pos, false), blocked, cache, start, false);
      logits = LmHead(hidden.select(1, t - 1));
    }
    cache->length_ = start + t;
    return logits;
  } catch (const c10::Error& e) {
    return TorchError("Extend failed", e);
  }
}

absl::Status Gpt2Model::KeepKvCacheRows(const std::vector<int64_t>& rows, KvCache* cache) const {
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
  try {
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
    for (at::Tensor* t : {&cache->x_, &cache->h_, &cache->qkv_, &cache->attn_, &cache->proj_, &cache->fc_,
                          &cache->logits_}) {
      *t = t->narrow(0, 0, n);
    }
    cache->batch_ = n;
  } catch (const c10::Error& e) {
    return TorchError("KeepKvCacheRows failed", e);
  }
  return absl::OkStatus();
}

}  // namespace rlhf::model
