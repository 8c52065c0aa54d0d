#include "common/model/llama.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/addmv.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/mv.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/where.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/model/cpu_kernels.h"

namespace rlhf::model {
namespace {

constexpr char kPrefix[] = "model.";

// Slots of KvCache::scratch_ for decode steps, each [batch, ...].
enum Scratch { kX, kH, kQ, kK, kV, kAttn, kProj, kGate, kUp, kRope, kLogits, kNumScratch };

using Op = internal::GemmNtOutput::Op;

// at::empty for long-lived buffers: big CPU ones get transparent huge pages before first touch.
at::Tensor EmptyLongLived(at::IntArrayRef shape, const at::TensorOptions& options) {
  at::Tensor t = at::empty(shape, options);
  if (t.device().is_cpu() && t.nbytes() >= (size_t{4} << 20)) internal::AdviseHugePages(t.data_ptr(), t.nbytes());
  return t;
}

const float* OrNull(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

// A product for GemmNtAvx512: y [rows, w.size(0)] (op)= x @ w^T + bias.
internal::GemmNtOutput Product(const at::Tensor& w, const at::Tensor& bias, float* y, int64_t ldy,
                               Op op = Op::kStore) {
  internal::GemmNtOutput o;
  o.w = w.data_ptr<float>();
  o.ldw = w.stride(0);
  o.bias = OrNull(bias);
  o.y = y;
  o.ldy = ldy;
  o.n = w.size(0);
  o.op = op;
  return o;
}

// y = silu(x @ gate^T + gate_bias) * (x @ up^T + up_bias).
internal::GemmNtOutput GatedProduct(const at::Tensor& gate, const at::Tensor& gate_bias, const at::Tensor& up,
                                    const at::Tensor& up_bias, float* y, int64_t ldy) {
  internal::GemmNtOutput o = Product(gate, gate_bias, y, ldy, Op::kGatedSilu);
  o.w2 = up.data_ptr<float>();
  o.bias2 = OrNull(up_bias);
  return o;
}

// x * cos + rotate_half(x) * sin in place on `rows` vectors of d floats (ld apart), with cos/sin [d / 2] (both
// halves of Hugging Face's cat(freqs, freqs) use the same angle).
void RotateRows(float* x, int64_t rows, int64_t ld, int64_t d, const float* cos, const float* sin) {
  const int64_t half = d / 2;
  for (int64_t r = 0; r < rows; ++r) {
    float* v = x + r * ld;
    for (int64_t i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] + (-b) * sin[i];
      v[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

// Index of the power-of-two bucket holding `rows` (bucket i: rows <= 2^i), capped at `buckets` - 1.
int RowBucket(int64_t rows, int buckets) {
  int i = 0;
  while (i + 1 < buckets && (int64_t{1} << i) < rows) ++i;
  return i;
}

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
  at::Tensor inv_freq = RopeFrequencies(config_).contiguous();
  inv_freq_cpu_.assign(inv_freq.data_ptr<float>(), inv_freq.data_ptr<float>() + inv_freq.numel());
  inv_freq_ = inv_freq.to(options_.device);
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
  // Inference forwards multiply through our kernel where it is the faster one; x is then updated in place.
  const bool kernel = !training && device().is_cpu() && !at::GradMode::is_enabled() && UseOurKernel(b * t);
  if (kernel) x = x.contiguous();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const Layer& y = layers_[l];
    at::Tensor h = RmsNorm(x, y.input_norm_w);
    at::Tensor q, k, v;
    if (kernel) {
      h = h.reshape({b * t, c.hidden_size}).contiguous();
      q = at::empty({b * t, heads * d}, h.options());
      k = at::empty({b * t, kv * d}, h.options());
      v = at::empty({b * t, kv * d}, h.options());
      KernelProducts(h, {Product(y.q_w, y.q_b, q.data_ptr<float>(), q.stride(0)),
                         Product(y.k_w, y.k_b, k.data_ptr<float>(), k.stride(0)),
                         Product(y.v_w, y.v_b, v.data_ptr<float>(), v.stride(0))});
    } else {
      q = at::linear(h, y.q_w, y.q_b);
      k = at::linear(h, y.k_w, y.k_b);
      v = at::linear(h, y.v_w, y.v_b);
    }
    q = q.view({b, t, heads, d});
    k = k.view({b, t, kv, d});
    v = v.view({b, t, kv, d});
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
    if (kernel) {
      const int64_t e = c.hidden_size;
      o = o.reshape({b * t, heads * d}).contiguous();
      KernelProducts(o, {Product(y.o_w, y.o_b, x.data_ptr<float>(), e, Op::kAccumulate)});
      h = RmsNorm(x, y.post_norm_w).reshape({b * t, e}).contiguous();
      at::Tensor act = at::empty({b * t, c.intermediate_size}, h.options());
      KernelProducts(h, {GatedProduct(y.gate_w, y.gate_b, y.up_w, y.up_b, act.data_ptr<float>(), act.stride(0))});
      KernelProducts(act, {Product(y.down_w, y.down_b, x.data_ptr<float>(), e, Op::kAccumulate)});
      continue;
    }
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

at::Tensor LlamaModel::LmHead(const at::Tensor& hidden) const {
  const int64_t rows = hidden.numel() / config_.hidden_size;
  if (!device().is_cpu() || at::GradMode::is_enabled() || !UseOurKernel(rows)) {
    return at::matmul(hidden, lm_head_w_.t());
  }
  at::Tensor in = hidden.reshape({rows, config_.hidden_size}).contiguous();
  at::Tensor out = at::empty({rows, config_.vocab_size}, in.options());
  KernelProducts(in, {Product(lm_head_w_, at::Tensor(), out.data_ptr<float>(), out.stride(0))});
  std::vector<int64_t> shape = hidden.sizes().vec();
  shape.back() = config_.vocab_size;
  return out.view(shape);
}

// ---------------------------------------------------------------------------------------------------------------
// Matrix kernels.

void LlamaModel::KernelProducts(const at::Tensor& x, std::initializer_list<internal::GemmNtOutput> outputs) const {
  internal::GemmNtAvx512(x.data_ptr<float>(), x.stride(0), x.size(0), x.size(1), outputs.begin(),
                         static_cast<int>(outputs.size()));
}

void LlamaModel::BlasLinear(const at::Tensor& in, const at::Tensor& w, const at::Tensor& bias, at::Tensor& out) const {
  const int64_t b = in.size(0);
  if (b <= options_.mv_max_batch) {
    for (int64_t r = 0; r < b; ++r) {
      at::Tensor row = out.select(0, r);
      if (bias.defined()) {
        at::addmv_out(row, bias, w, in.select(0, r));
      } else {
        at::mv_out(row, w, in.select(0, r));
      }
    }
  } else if (bias.defined()) {
    at::addmm_out(out, bias, in, w.t());
  } else {
    at::mm_out(out, in, w.t());
  }
}

bool LlamaModel::UseOurKernel(int64_t rows) const {
  if (!UseAvx512Kernel()) return false;  // kBlas, or no AVX-512
  if (options_.decode_kernel == DecodeKernel::kAvx512) return true;
  const int bucket = RowBucket(rows, kRowBuckets);
  int verdict = kernel_choice_[bucket].load(std::memory_order_acquire);
  if (verdict == 0) {
    std::lock_guard<std::mutex> lock(kernel_choice_mu_);
    verdict = kernel_choice_[bucket].load(std::memory_order_relaxed);
    if (verdict == 0) {
      verdict = MeasureOurKernelFaster(int64_t{1} << bucket) ? 1 : 2;
      kernel_choice_[bucket].store(verdict, std::memory_order_release);
    }
  }
  return verdict == 1;
}

std::string LlamaModel::MatrixKernelFor(int64_t rows) const {
  if (!device().is_cpu()) return "device";
  return UseOurKernel(rows) ? "avx512" : "blas";
}

bool LlamaModel::MeasureOurKernelFaster(int64_t rows) const {
  c10::InferenceMode inference;
  const ModelConfig& c = config_;
  const int64_t e = c.hidden_size, qn = c.num_attention_heads * c.head_dim, kvn = c.num_key_value_heads * c.head_dim;
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  const int64_t widest = std::max({e, qn, c.intermediate_size});
  at::Tensor in = at::empty({rows, widest}, opts).fill_(0.01);
  at::Tensor q = at::empty({rows, qn}, opts), k = at::empty({rows, kvn}, opts), v = at::empty({rows, kvn}, opts);
  at::Tensor x = at::empty({rows, e}, opts).zero_();
  at::Tensor g = at::empty({rows, c.intermediate_size}, opts), u = at::empty({rows, c.intermediate_size}, opts);
  at::Tensor h = in.narrow(1, 0, e), attn = in.narrow(1, 0, qn), act = in.narrow(1, 0, c.intermediate_size);
  // Layers' products as the decode step runs them, one way or the other, over enough layers that their weights
  // (at least 64 MiB, beyond any last-level cache) stream from memory as in a real step: one layer alone would sit
  // in the cache and favour the wrong kernel on a memory-bound step.
  const int64_t layer_bytes =
      4 * (e * (qn + 2 * kvn) + qn * e + 3 * e * c.intermediate_size);
  const size_t timed_layers = static_cast<size_t>(std::min<int64_t>(
      static_cast<int64_t>(layers_.size()), std::max<int64_t>(1, ((int64_t{64} << 20) + layer_bytes - 1) / layer_bytes)));
  const std::vector<Layer> timed(layers_.begin(), layers_.begin() + static_cast<std::ptrdiff_t>(timed_layers));
  auto ours = [&]() {
    for (const Layer& y : timed) {
      KernelProducts(h, {Product(y.q_w, y.q_b, q.data_ptr<float>(), qn),
                         Product(y.k_w, y.k_b, k.data_ptr<float>(), kvn), Product(y.v_w, y.v_b, v.data_ptr<float>(), kvn)});
      KernelProducts(attn, {Product(y.o_w, y.o_b, x.data_ptr<float>(), e, Op::kAccumulate)});
      KernelProducts(h, {GatedProduct(y.gate_w, y.gate_b, y.up_w, y.up_b, g.data_ptr<float>(), g.stride(0))});
      KernelProducts(act, {Product(y.down_w, y.down_b, x.data_ptr<float>(), e, Op::kAccumulate)});
    }
  };
  at::Tensor proj = at::empty({rows, e}, opts);
  auto blas = [&]() {
    for (const Layer& y : timed) {
      BlasLinear(h, y.q_w, y.q_b, q);
      BlasLinear(h, y.k_w, y.k_b, k);
      BlasLinear(h, y.v_w, y.v_b, v);
      BlasLinear(attn, y.o_w, y.o_b, proj);
      BlasLinear(h, y.gate_w, y.gate_b, g);
      BlasLinear(h, y.up_w, y.up_b, u);
      internal::SiluMulRows(g.data_ptr<float>(), g.stride(0), u.data_ptr<float>(), u.stride(0), rows, g.size(1));
      BlasLinear(act, y.down_w, y.down_b, proj);
    }
  };
  auto seconds = [](const auto& fn) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  ours();  // warm-up: weights into cache, threads started
  blas();
  double best_ours = std::numeric_limits<double>::infinity(), best_blas = best_ours;
  for (int i = 0; i < 3; ++i) {  // interleaved, so that load from other processes hits both alike
    best_ours = std::min(best_ours, seconds(ours));
    best_blas = std::min(best_blas, seconds(blas));
  }
  return best_ours <= best_blas;
}

// ---------------------------------------------------------------------------------------------------------------
// Incremental decoding.

void LlamaModel::ResetScratch(int64_t batch, KvCache* cache) const {
  const ModelConfig& c = config_;
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(device());
  const int64_t e = c.hidden_size, qn = c.num_attention_heads * c.head_dim, kvn = c.num_key_value_heads * c.head_dim;
  std::vector<at::Tensor>& s = cache->scratch_;
  s.assign(kNumScratch, at::Tensor());
  s[kX] = at::empty({batch, e}, opts);
  s[kH] = at::empty({batch, e}, opts);
  s[kQ] = at::empty({batch, qn}, opts);
  s[kK] = at::empty({batch, kvn}, opts);
  s[kV] = at::empty({batch, kvn}, opts);
  s[kAttn] = at::empty({batch, qn}, opts);
  s[kProj] = at::empty({batch, e}, opts);
  s[kGate] = at::empty({batch, c.intermediate_size}, opts);
  s[kUp] = at::empty({batch, c.intermediate_size}, opts);
  s[kRope] = at::empty({batch, c.head_dim}, opts);  // cos of the d/2 angles, then their sin
  s[kLogits] = EmptyLongLived({batch, c.vocab_size}, opts);
}

at::Tensor LlamaModel::DecodeStepCpu(const at::Tensor& ids, const at::Tensor& positions, KvCache* cache) const {
  const ModelConfig& c = config_;
  const int64_t b = cache->batch_, slot = cache->length_, e = c.hidden_size, d = c.head_dim, half = d / 2;
  const int64_t heads = c.num_attention_heads, kvh = c.num_key_value_heads, qn = heads * d, kvn = kvh * d;
  const float eps = static_cast<float>(c.norm_eps);
  const bool ours = UseOurKernel(b);
  std::vector<at::Tensor>& s = cache->scratch_;
  // Scratch rows stay their allocated width apart (KeepKvCacheRows narrows rows only): leading dimensions are the
  // widths below.
  float *x = s[kX].data_ptr<float>(), *h = s[kH].data_ptr<float>(), *q = s[kQ].data_ptr<float>();
  float *k = s[kK].data_ptr<float>(), *v = s[kV].data_ptr<float>(), *attn = s[kAttn].data_ptr<float>();
  float *proj = s[kProj].data_ptr<float>(), *rope = s[kRope].data_ptr<float>();

  const at::Tensor id_rows = ids.contiguous(), pos_rows = positions.contiguous();
  const int64_t* id = id_rows.data_ptr<int64_t>();
  const int64_t* pos = pos_rows.data_ptr<int64_t>();
  const float* embed = embed_w_.data_ptr<float>();
  for (int64_t r = 0; r < b; ++r) {
    std::memcpy(x + r * e, embed + id[r] * embed_w_.stride(0), sizeof(float) * e);
    // The generic path's angles: float(position) * inv_freq in float32.
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos[r]) * inv_freq_cpu_[i];
      rope[r * d + i] = std::cos(angle);
      rope[r * d + half + i] = std::sin(angle);
    }
  }

  // Residual stream x += in @ w^T + bias.
  auto residual = [&](at::Tensor& in, const at::Tensor& w, const at::Tensor& bias) {
    if (ours) {
      KernelProducts(in, {Product(w, bias, x, e, Op::kAccumulate)});
      return;
    }
    BlasLinear(in, w, bias, s[kProj]);
    for (int64_t r = 0; r < b; ++r) {
      for (int64_t i = 0; i < e; ++i) x[r * e + i] += proj[r * e + i];
    }
  };

  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  float* keys = cache->keys_.data_ptr<float>();
  float* values = cache->values_.data_ptr<float>();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const Layer& y = layers_[l];
    internal::RmsNormRows(x, e, y.input_norm_w.data_ptr<float>(), eps, b, e, h, e);
    if (ours) {
      KernelProducts(s[kH], {Product(y.q_w, y.q_b, q, qn), Product(y.k_w, y.k_b, k, kvn),
                             Product(y.v_w, y.v_b, v, kvn)});
    } else {
      BlasLinear(s[kH], y.q_w, y.q_b, s[kQ]);
      BlasLinear(s[kH], y.k_w, y.k_b, s[kK]);
      BlasLinear(s[kH], y.v_w, y.v_b, s[kV]);
    }
    if (c.qk_norm) {
      internal::RmsNormRows(q, d, y.q_norm_w.data_ptr<float>(), eps, b * heads, d, q, d);
      internal::RmsNormRows(k, d, y.k_norm_w.data_ptr<float>(), eps, b * kvh, d, k, d);
    }
    // RoPE at each row's position; the key and value go to the cache at `slot`.
    float* keys_l = keys + l * cache->keys_.stride(0);
    float* values_l = values + l * cache->values_.stride(0);
    const int64_t k_row = cache->keys_.stride(1), k_head = cache->keys_.stride(2), k_dim = cache->keys_.stride(3);
    const int64_t v_row = cache->values_.stride(1), v_head = cache->values_.stride(2);
    const int64_t v_slot = cache->values_.stride(3);
    for (int64_t r = 0; r < b; ++r) {
      const float* cos = rope + r * d;
      RotateRows(q + r * qn, heads, d, d, cos, cos + half);
      RotateRows(k + r * kvn, kvh, d, d, cos, cos + half);
      for (int64_t g = 0; g < kvh; ++g) {
        const float* kr = k + r * kvn + g * d;
        float* kt = keys_l + r * k_row + g * k_head + slot;
        for (int64_t i = 0; i < d; ++i) kt[i * k_dim] = kr[i];
        std::memcpy(values_l + r * v_row + g * v_head + slot * v_slot, v + r * kvn + g * d, sizeof(float) * d);
      }
    }
    internal::GroupedDecodeAttentionArgs args;
    args.q = q;
    args.q_row_stride = qn;
    args.keys_t = keys_l;
    args.k_row = k_row;
    args.k_head = k_head;
    args.k_dim = k_dim;
    args.values = values_l;
    args.v_row = v_row;
    args.v_head = v_head;
    args.v_slot = v_slot;
    args.allowed = cache->key_mask_.data_ptr<bool>();
    args.allowed_row = cache->key_mask_.stride(0);
    args.out = attn;
    args.out_row_stride = qn;
    args.rows = b;
    args.heads = heads;
    args.kv_heads = kvh;
    args.head_dim = d;
    args.slots = slot + 1;
    args.scale = scale;
    internal::GroupedDecodeAttention(args);
    residual(s[kAttn], y.o_w, y.o_b);

    internal::RmsNormRows(x, e, y.post_norm_w.data_ptr<float>(), eps, b, e, h, e);
    if (ours) {
      KernelProducts(s[kH], {GatedProduct(y.gate_w, y.gate_b, y.up_w, y.up_b, s[kGate].data_ptr<float>(),
                                          c.intermediate_size)});
    } else {
      BlasLinear(s[kH], y.gate_w, y.gate_b, s[kGate]);
      BlasLinear(s[kH], y.up_w, y.up_b, s[kUp]);
      internal::SiluMulRows(s[kGate].data_ptr<float>(), c.intermediate_size, s[kUp].data_ptr<float>(),
                            c.intermediate_size, b, c.intermediate_size);
    }
    residual(s[kGate], y.down_w, y.down_b);
  }
  internal::RmsNormRows(x, e, norm_w_.data_ptr<float>(), eps, b, e, h, e);
  at::Tensor& logits = s[kLogits];
  if (ours) {
    KernelProducts(s[kH], {Product(lm_head_w_, at::Tensor(), logits.data_ptr<float>(), c.vocab_size)});
  } else {
    BlasLinear(s[kH], lm_head_w_, at::Tensor(), logits);
  }
  return logits;
}

}  // namespace rlhf::model
