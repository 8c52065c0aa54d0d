// The Llama family as a CausalLm (Hugging Face's LlamaModel / Qwen2Model / Qwen3Model / MistralModel): RMSNorm
// (computed in float32, `weight * x * rsqrt(mean(x^2) + eps)`), rotary position embeddings (`rotate_half` pairing,
// `rope_theta`, optional Llama 3 frequency scaling), grouped-query attention (query head h reads key/value head
// h / (heads / kv_heads)), optional q/k/v and o biases (Qwen2, `attention_bias`), per-head q/k RMSNorm before RoPE
// (Qwen3), `head_dim` apart from hidden / heads, SiLU-gated MLP `down(silu(gate(x)) * up(x))`, tied or untied LM
// head.
//
// Checkpoints are Hugging Face's: `model.layers.N.self_attn.q_proj.weight` ... in nn.Linear layout [out, in] (the
// `model.` prefix is optional on load), `lm_head.weight` when untied, `score.weight` for *ForSequenceClassification.
//
// Made by CreateModel / LoadModel (causal_lm.h) for model_type "llama", "qwen2", "qwen3" and "mistral".
//
// On CPU, one-token decode steps run fused row kernels (RMSNorm, q/k norm, RoPE at the step's position written
// into the KV cache, grouped-query attention, SiLU gate) around matrix products on the [out, in] parameters
// themselves: our AVX-512 kernel (cpu_kernels.h GemmNtAvx512, which streams each weight once per step) or OpenBLAS.
// Inference forwards (prefill, scoring: no gradient recorded) use the same kernel for their products. Which of the
// two multiplies m rows is ModelOptions::decode_kernel; kAuto measures both on this machine (once per model and
// power-of-two bucket of m, on layer 0's weights) and takes the faster.
#ifndef RLHF_COMMON_MODEL_LLAMA_H_
#define RLHF_COMMON_MODEL_LLAMA_H_

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "common/model/causal_lm.h"
#include "common/model/cpu_kernels.h"

namespace rlhf::model {

class LlamaModel final : public CausalLm {
 public:
  // The matrix kernel that multiplies `rows` rows on CPU: "avx512" (GemmNtAvx512) or "blas" (OpenBLAS). With kAuto
  // the first call for a bucket of rows measures both (tens of milliseconds on a 100M-parameter model).
  std::string MatrixKernelFor(int64_t rows) const;

 private:
  friend class CausalLm;
  LlamaModel(const ModelConfig& config, const ModelOptions& options);

  struct Layer {
    at::Tensor input_norm_w, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, q_norm_w, k_norm_w;
    at::Tensor post_norm_w, gate_w, gate_b, up_w, up_b, down_w, down_b;  // biases undefined when absent
  };

  std::vector<ParameterSpec> BodySpecs() const override;
  void BindParameters() override;
  std::string StoredName(const std::string& name, const WeightSource& weights) const override;
  bool IsIgnoredTensor(const std::string& stored_name) const override;
  at::Tensor HiddenStates(const at::Tensor& ids, const at::Tensor& positions, const at::Tensor& blocked,
                          KvCache* cache, int64_t start, bool training) const override;
  at::Tensor LmHead(const at::Tensor& hidden) const override;
  at::Tensor DecodeStepCpu(const at::Tensor& ids, const at::Tensor& positions, KvCache* cache) const override;
  void ResetScratch(int64_t batch, KvCache* cache) const override;

  // Whether our kernel multiplies `rows` rows (options, CPU, and with kAuto the measured crossover).
  bool UseOurKernel(int64_t rows) const;
  // kAuto: times the products of the first layers (at least 64 MiB of weights, so that they stream from memory as
  // in a real step) at `rows` rows with our kernel and with OpenBLAS (best of 3 each, interleaved); true when ours
  // is faster.
  bool MeasureOurKernelFaster(int64_t rows) const;
  // Inference forwards: x [rows, k] contiguous through our kernel (products on the same input in one call).
  void KernelProducts(const at::Tensor& x, std::initializer_list<internal::GemmNtOutput> outputs) const;
  // One matrix product of the decode step into `out` [b, out_features] through OpenBLAS (mv by rows up to
  // options_.mv_max_batch).
  void BlasLinear(const at::Tensor& in, const at::Tensor& w, const at::Tensor& bias, at::Tensor& out) const;

  // cos and sin of the rotary angles at `positions` [b, t]: each [b, t, head_dim] float32.
  std::pair<at::Tensor, at::Tensor> RotaryAngles(const at::Tensor& positions) const;
  // RMSNorm over the last dimension, in float32.
  at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight) const;

  at::Tensor inv_freq_;  // [head_dim / 2] float32: RoPE frequencies after the config's scaling
  at::Tensor embed_w_, norm_w_, lm_head_w_;  // lm_head_w_ is embed_w_ when tied
  std::vector<Layer> layers_;
  std::vector<float> inv_freq_cpu_;  // inv_freq_ for the decode step's RoPE

  // kAuto's verdicts per bucket of rows (bucket i: up to 2^i rows; the last bucket also serves larger counts):
  // 0 not measured yet, 1 our kernel, 2 OpenBLAS.
  static constexpr int kRowBuckets = 10;
  mutable std::mutex kernel_choice_mu_;
  mutable std::atomic<int> kernel_choice_[kRowBuckets] = {};
};

}  // namespace rlhf::model

#endif  // RLHF_COMMON_MODEL_LLAMA_H_
