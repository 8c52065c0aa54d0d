#include "common/model/gpt2.h"

#include <cmath>
#include <limits>
#include <utility>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/addmv.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/mv.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/softmax.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/model/cpu_kernels.h"

namespace rlhf::model {
namespace {

constexpr char kPrefix[] = "transformer.";

// Slots of KvCache::scratch_ for decode steps, each [batch, ...].
enum Scratch { kX, kH, kQkv, kAttn, kProj, kFc, kLogits, kNumScratch };

// at::empty for long-lived buffers (weight copies): big CPU ones get transparent huge pages before first touch.
at::Tensor EmptyLongLived(at::IntArrayRef shape, const at::TensorOptions& options) {
  at::Tensor t = at::empty(shape, options);
  if (t.device().is_cpu() && t.nbytes() >= (size_t{4} << 20)) internal::AdviseHugePages(t.data_ptr(), t.nbytes());
  return t;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Parameters.

std::vector<CausalLm::ParameterSpec> Gpt2Model::BodySpecs() const {
  const int64_t e = config_.hidden_size, inner = config_.intermediate_size;
  const std::string p = kPrefix;
  std::vector<ParameterSpec> specs = {{p + "wte.weight", {config_.vocab_size, e}, Init::kNormal},
                                      {p + "wpe.weight", {config_.max_position_embeddings, e}, Init::kNormal}};
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    const std::string h = absl::StrCat(p, "h.", l, ".");
    specs.push_back({h + "ln_1.weight", {e}, Init::kOne});
    specs.push_back({h + "ln_1.bias", {e}, Init::kZero});
    specs.push_back({h + "attn.c_attn.weight", {e, 3 * e}, Init::kNormal});
    specs.push_back({h + "attn.c_attn.bias", {3 * e}, Init::kZero});
    specs.push_back({h + "attn.c_proj.weight", {e, e}, Init::kResidualNormal});
    specs.push_back({h + "attn.c_proj.bias", {e}, Init::kZero});
    specs.push_back({h + "ln_2.weight", {e}, Init::kOne});
    specs.push_back({h + "ln_2.bias", {e}, Init::kZero});
    specs.push_back({h + "mlp.c_fc.weight", {e, inner}, Init::kNormal});
    specs.push_back({h + "mlp.c_fc.bias", {inner}, Init::kZero});
    specs.push_back({h + "mlp.c_proj.weight", {inner, e}, Init::kResidualNormal});
    specs.push_back({h + "mlp.c_proj.bias", {e}, Init::kZero});
  }
  specs.push_back({p + "ln_f.weight", {e}, Init::kOne});
  specs.push_back({p + "ln_f.bias", {e}, Init::kZero});
  return specs;
}

void Gpt2Model::BindParameters() {
  size_t i = 0;
  auto next = [&]() { return params_[i++].tensor; };
  wte_ = next();
  wpe_ = next();
  blocks_.clear();
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    Block b;
    b.ln_1_w = next();
    b.ln_1_b = next();
    b.attn_w = next();
    b.attn_b = next();
    b.attn_proj_w = next();
    b.attn_proj_b = next();
    b.ln_2_w = next();
    b.ln_2_b = next();
    b.fc_w = next();
    b.fc_b = next();
    b.mlp_proj_w = next();
    b.mlp_proj_b = next();
    blocks_.push_back(std::move(b));
  }
  ln_f_w_ = next();
  ln_f_b_ = next();
  decode_copies_.assign(blocks_.size(), DecodeCopies{});
}

std::string Gpt2Model::StoredName(const std::string& name, const WeightSource& weights) const {
  // Checkpoints of GPT2LMHeadModel / GPT2ForSequenceClassification carry the prefix; those of GPT2Model do not.
  if (!absl::StartsWith(name, kPrefix) || weights.Contains(absl::StrCat(kPrefix, "wte.weight"))) return name;
  return name.substr(sizeof(kPrefix) - 1);
}

bool Gpt2Model::IsIgnoredTensor(const std::string& stored_name) const {
  // Causal-mask buffers of old checkpoints; the LM head is tied to wte.
  return absl::EndsWith(stored_name, ".attn.bias") || absl::EndsWith(stored_name, ".attn.masked_bias") ||
         stored_name == "lm_head.weight";
}

void Gpt2Model::InvalidateDerivedWeights() const {
  std::lock_guard<std::mutex> lock(decode_copies_mu_);
  for (DecodeCopies& c : decode_copies_) c = DecodeCopies{};
  wte_t_ = at::Tensor();
  wte_t_version_ = -1;
}

// ---------------------------------------------------------------------------------------------------------------
// Full forward (training, scoring, prefill).

void Gpt2Model::Activation(at::Tensor& x) const {
  const std::string& f = config_.hidden_act;
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
  at::Tensor in = hidden.reshape({-1, config_.hidden_size}).contiguous();
  const at::Tensor& wte_t = EnsureTransposedWte();
  at::Tensor out = at::empty({in.size(0), config_.vocab_size}, in.options());
  internal::SmallGemmAvx512(in.data_ptr<float>(), in.size(1), wte_t.data_ptr<float>(), wte_t.size(1), nullptr,
                            out.data_ptr<float>(), out.size(1), in.size(0), in.size(1), config_.vocab_size);
  std::vector<int64_t> shape = hidden.sizes().vec();
  shape.back() = config_.vocab_size;
  return out.view(shape);
}

at::Tensor Gpt2Model::HiddenStates(const at::Tensor& ids, const at::Tensor& positions, const at::Tensor& blocked,
                                    KvCache* cache, int64_t start, bool dropout) const {
  at::Tensor x = at::embedding(wte_, ids) + at::embedding(wpe_, positions);
  if (dropout && config_.embd_pdrop > 0) x = at::dropout(x, config_.embd_pdrop, true);
  const int64_t b = x.size(0), t = x.size(1), e = config_.hidden_size, h = config_.num_attention_heads;
  const int64_t d = config_.head_dim;
  const double eps = config_.norm_eps;
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
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
    const std::string& f = config_.hidden_act;
    m = f == "gelu" ? at::gelu(m) : f == "relu" ? at::relu(m) : at::gelu(m, "tanh");
    m = Linear(m, blk.mlp_proj_w, blk.mlp_proj_b).view({b, t, e});
    if (dropout && config_.resid_pdrop > 0) m = at::dropout(m, config_.resid_pdrop, true);
    x = x + m;
  }
  return at::layer_norm(x, {e}, ln_f_w_, ln_f_b_, eps);
}


// ---------------------------------------------------------------------------------------------------------------
// Incremental decoding.

void Gpt2Model::ResetScratch(int64_t batch, KvCache* cache) const {
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(device());
  const int64_t e = config_.hidden_size;
  std::vector<at::Tensor>& s = cache->scratch_;
  s.assign(kNumScratch, at::Tensor());
  s[kX] = at::empty({batch, e}, opts);
  s[kH] = at::empty({batch, e}, opts);
  s[kQkv] = at::empty({batch, 3 * e}, opts);
  s[kAttn] = at::empty({batch, e}, opts);
  s[kProj] = at::empty({batch, e}, opts);
  s[kFc] = at::empty({batch, config_.intermediate_size}, opts);
  s[kLogits] = EmptyLongLived({batch, config_.vocab_size}, opts);
}

const at::Tensor& Gpt2Model::EnsureTransposedWte() const {
  std::lock_guard<std::mutex> lock(decode_copies_mu_);
  const int64_t version = wte_._version();
  if (!wte_t_.defined() || wte_t_version_ != version) {
    wte_t_ = EmptyLongLived({config_.hidden_size, config_.vocab_size}, wte_.options().requires_grad(false));
    internal::Transpose(wte_.data_ptr<float>(), config_.vocab_size, config_.hidden_size, wte_t_.data_ptr<float>());
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
  const int64_t b = cache->batch_, e = config_.hidden_size, h = config_.num_attention_heads, d = config_.head_dim;
  const int64_t slot = cache->length_;
  const float eps = static_cast<float>(config_.norm_eps);
  const bool avx512 = UseAvx512Kernel();
  const bool use_mv = !avx512 && b <= options_.mv_max_batch;
  const std::vector<DecodeCopies>* copies = use_mv ? &EnsureDecodeCopies() : nullptr;
  std::vector<at::Tensor>& s = cache->scratch_;
  at::Tensor &x = s[kX], &hs = s[kH], &qkv = s[kQkv], &attn = s[kAttn], &proj = s[kProj], &fc = s[kFc];

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
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
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
  at::Tensor& logits = s[kLogits];
  if (avx512) {
    const at::Tensor& wte_t = EnsureTransposedWte();  // [hidden, vocab]
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

}  // namespace rlhf::model
