#include "common/model/llama.h"

#include <cmath>
#include <limits>
#include <utility>

#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/where.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace rlhf::model {
namespace {

constexpr char kPrefix[] = "model.";

// Hugging Face's _compute_default_rope_parameters and _compute_llama3_parameters, in float32.
at::Tensor RopeFrequencies(const ModelConfig& c) {
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  at::Tensor inv_freq =
      1.0 / at::pow(c.rope_theta, at::arange(0, c.head_dim, 2, opts.dtype(at::kLong)).to(at::kFloat) /
                                      static_cast<double>(c.head_dim));
  if (!c.rope_scaling.has_value()) return inv_freq;
  const Llama3RopeScaling& s = *c.rope_scaling;
  const double old_context = static_cast<double>(s.original_max_position_embeddings);
  const double low_freq_wavelen = old_context / s.low_freq_factor;
  const double high_freq_wavelen = old_context / s.high_freq_factor;
  at::Tensor wavelen = 2 * M_PI / inv_freq;
  at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq);
  at::Tensor smooth = (old_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  at::Tensor smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
  at::Tensor medium = (wavelen < high_freq_wavelen).logical_not().logical_and((wavelen > low_freq_wavelen).logical_not());
  return at::where(medium, smoothed, scaled);
}

// x * cos + rotate_half(x) * sin on [b, heads, t, d] with cos/sin [b, 1, t, d].
at::Tensor ApplyRotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

}  // namespace

LlamaModel::LlamaModel(const ModelConfig& config, const ModelOptions& options) : CausalLm(config, options) {
  inv_freq_ = RopeFrequencies(config_).to(options_.device);
}

// ---------------------------------------------------------------------------------------------------------------
// Parameters.

std::vector<CausalLm::ParameterSpec> LlamaModel::BodySpecs() const {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  const int64_t inner = c.intermediate_size;
  const std::string p = kPrefix;
  std::vector<ParameterSpec> specs = {{p + "embed_tokens.weight", {c.vocab_size, h}, Init::kNormal}};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string a = absl::StrCat(p, "layers.", l, ".self_attn.");
    const std::string m = absl::StrCat(p, "layers.", l, ".mlp.");
    specs.push_back({absl::StrCat(p, "layers.", l, ".input_layernorm.weight"), {h}, Init::kOne});
    specs.push_back({a + "q_proj.weight", {q, h}, Init::kNormal});
    if (c.attention_bias) specs.push_back({a + "q_proj.bias", {q}, Init::kZero});
    specs.push_back({a + "k_proj.weight", {kv, h}, Init::kNormal});
    if (c.attention_bias) specs.push_back({a + "k_proj.bias", {kv}, Init::kZero});
    specs.push_back({a + "v_proj.weight", {kv, h}, Init::kNormal});
    if (c.attention_bias) specs.push_back({a + "v_proj.bias", {kv}, Init::kZero});
    specs.push_back({a + "o_proj.weight", {h, q}, Init::kNormal});
    if (c.o_proj_bias) specs.push_back({a + "o_proj.bias", {h}, Init::kZero});
    if (c.qk_norm) {
      specs.push_back({a + "q_norm.weight", {c.head_dim}, Init::kOne});
      specs.push_back({a + "k_norm.weight", {c.head_dim}, Init::kOne});
    }
    specs.push_back({absl::StrCat(p, "layers.", l, ".post_attention_layernorm.weight"), {h}, Init::kOne});
    specs.push_back({m + "gate_proj.weight", {inner, h}, Init::kNormal});
    if (c.mlp_bias) specs.push_back({m + "gate_proj.bias", {inner}, Init::kZero});
    specs.push_back({m + "up_proj.weight", {inner, h}, Init::kNormal});
    if (c.mlp_bias) specs.push_back({m + "up_proj.bias", {inner}, Init::kZero});
    specs.push_back({m + "down_proj.weight", {h, inner}, Init::kNormal});
    if (c.mlp_bias) specs.push_back({m + "down_proj.bias", {h}, Init::kZero});
  }
  specs.push_back({p + "norm.weight", {h}, Init::kOne});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {c.vocab_size, h}, Init::kNormal});
  return specs;
}

void LlamaModel::BindParameters() {
  const ModelConfig& c = config_;
  size_t i = 0;
  auto next = [&]() { return params_[i++].tensor; };
  embed_w_ = next();
  layers_.clear();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    Layer y;
    y.input_norm_w = next();
    y.q_w = next();
    if (c.attention_bias) y.q_b = next();
    y.k_w = next();
    if (c.attention_bias) y.k_b = next();
    y.v_w = next();
    if (c.attention_bias) y.v_b = next();
    y.o_w = next();
    if (c.o_proj_bias) y.o_b = next();
    if (c.qk_norm) {
      y.q_norm_w = next();
      y.k_norm_w = next();
    }
    y.post_norm_w = next();
    y.gate_w = next();
    if (c.mlp_bias) y.gate_b = next();
    y.up_w = next();
    if (c.mlp_bias) y.up_b = next();
    y.down_w = next();
    if (c.mlp_bias) y.down_b = next();
    layers_.push_back(std::move(y));
  }
  norm_w_ = next();
  lm_head_w_ = c.tie_word_embeddings ? embed_w_ : next();
}

std::string LlamaModel::StoredName(const std::string& name, const WeightSource& weights) const {
  // *ForCausalLM / *ForSequenceClassification checkpoints carry the prefix; those of the bare *Model do not.
  if (!absl::StartsWith(name, kPrefix) || weights.Contains(absl::StrCat(kPrefix, "embed_tokens.weight"))) {
    return name;
  }
  return name.substr(sizeof(kPrefix) - 1);
}

bool LlamaModel::IsIgnoredTensor(const std::string& stored_name) const {
  return absl::EndsWith(stored_name, ".rotary_emb.inv_freq") ||
         (config_.tie_word_embeddings && stored_name == "lm_head.weight");
}

// ---------------------------------------------------------------------------------------------------------------
// Forward.

at::Tensor LlamaModel::RmsNorm(const at::Tensor& x, const at::Tensor& weight) const {
  at::Tensor xf = x.to(at::kFloat);
  return weight * (xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + config_.norm_eps));
}

std::pair<at::Tensor, at::Tensor> LlamaModel::RotaryAngles(const at::Tensor& positions) const {
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq_;  // [b, t, d/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);                            // [b, t, d]
  return {emb.cos(), emb.sin()};
}

at::Tensor LlamaModel::HiddenStates(const at::Tensor& ids, const at::Tensor& positions, const at::Tensor& blocked,
                                    KvCache* cache, int64_t start, bool training) const {
  const ModelConfig& c = config_;
  const int64_t b = ids.size(0), t = ids.size(1), heads = c.num_attention_heads, kv = c.num_key_value_heads;
  const int64_t d = c.head_dim, groups = heads / kv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  at::Tensor x = at::embedding(embed_w_, ids);
  if (training && c.embd_pdrop > 0) x = at::dropout(x, c.embd_pdrop, true);
  auto [cos, sin] = RotaryAngles(positions);
  cos = cos.unsqueeze(1);  // [b, 1, t, d]
  sin = sin.unsqueeze(1);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const Layer& y = layers_[l];
    at::Tensor h = RmsNorm(x, y.input_norm_w);
    at::Tensor q = at::linear(h, y.q_w, y.q_b).view({b, t, heads, d});
    at::Tensor k = at::linear(h, y.k_w, y.k_b).view({b, t, kv, d});
    at::Tensor v = at::linear(h, y.v_w, y.v_b).view({b, t, kv, d});
    if (c.qk_norm) {
      q = RmsNorm(q, y.q_norm_w);
      k = RmsNorm(k, y.k_norm_w);
    }
    q = ApplyRotary(q.transpose(1, 2), cos, sin);  // [b, heads, t, d]
    k = ApplyRotary(k.transpose(1, 2), cos, sin);  // [b, kv, t, d]
    v = v.transpose(1, 2);                         // [b, kv, t, d]
    at::Tensor k_t = k.transpose(-1, -2);          // [b, kv, d, t]
    if (cache != nullptr) {
      cache->keys_[l].narrow(3, start, t).copy_(k_t);
      cache->values_[l].narrow(2, start, t).copy_(v);
      k_t = cache->keys_[l].narrow(3, 0, start + t);
      v = cache->values_[l].narrow(2, 0, start + t);
    }
    const int64_t s = k_t.size(-1);
    // Grouped queries: the `groups` query heads of one key/value head attend together, without copying keys.
    at::Tensor qg = (q * scale).reshape({b, kv, groups * t, d});
    at::Tensor att = at::matmul(qg, k_t).view({b, heads, t, s});
    att = at::softmax(att.masked_fill(blocked, -std::numeric_limits<float>::infinity()), -1);
    if (training && c.attn_pdrop > 0) att = at::dropout(att, c.attn_pdrop, true);
    at::Tensor o = at::matmul(att.reshape({b, kv, groups * t, s}), v).view({b, heads, t, d});
    o = o.transpose(1, 2).reshape({b, t, heads * d});
    o = at::linear(o, y.o_w, y.o_b);
    if (training && c.resid_pdrop > 0) o = at::dropout(o, c.resid_pdrop, true);
    x = x + o;
    h = RmsNorm(x, y.post_norm_w);
    at::Tensor m = at::linear(at::silu(at::linear(h, y.gate_w, y.gate_b)) * at::linear(h, y.up_w, y.up_b), y.down_w,
                              y.down_b);
    if (training && c.resid_pdrop > 0) m = at::dropout(m, c.resid_pdrop, true);
    x = x + m;
  }
  return RmsNorm(x, norm_w_);
}

at::Tensor LlamaModel::LmHead(const at::Tensor& hidden) const { return at::matmul(hidden, lm_head_w_.t()); }

// ---------------------------------------------------------------------------------------------------------------
// Incremental decoding.

void LlamaModel::ResetScratch(int64_t batch, KvCache* cache) const {
  // The step runs through HiddenStates; one [batch] scratch row keeps KeepKvCacheRows' bookkeeping uniform.
  cache->scratch_.assign(1, at::empty({batch}, at::TensorOptions().dtype(at::kFloat).device(device())));
}

at::Tensor LlamaModel::DecodeStepCpu(const at::Tensor& ids, const at::Tensor& positions, KvCache* cache) const {
  const int64_t b = cache->batch_, slot = cache->length_;
  // Slot j is visible when it holds a real token or is the query's own slot.
  at::Tensor visible = cache->key_mask_.narrow(1, 0, slot + 1).clone();
  visible.select(1, slot).fill_(true);
  at::Tensor blocked = visible.logical_not().view({b, 1, 1, slot + 1});
  at::Tensor hidden = HiddenStates(ids, positions, blocked, cache, slot, false);
  return LmHead(hidden.select(1, 0));
}

}  // namespace rlhf::model
