// GPT-2 (Radford et al. 2019; Hugging Face's GPT2Model) as a CausalLm: pre-LayerNorm blocks, learned positions,
// fused QKV, GELU MLP, final LayerNorm, LM head tied to the token embedding wte.
//
// Checkpoints are Hugging Face's: tensor names `transformer.h.0.attn.c_attn.weight` (the `transformer.` prefix is
// optional on load), Conv1D weights stored [in, out]. Parameters are held in that layout: it is what `addmm` wants
// for batched inputs and what the AVX-512 decode kernel streams.
//
// Made by CreateModel / LoadModel (causal_lm.h) for model_type "gpt2".
#ifndef RLHF_COMMON_MODEL_GPT2_H_
#define RLHF_COMMON_MODEL_GPT2_H_

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "common/model/causal_lm.h"

namespace rlhf::model {

class Gpt2Model final : public CausalLm {
 private:
  friend class CausalLm;
  Gpt2Model(const ModelConfig& config, const ModelOptions& options) : CausalLm(config, options) {}

  struct Block {
    at::Tensor ln_1_w, ln_1_b, attn_w, attn_b, attn_proj_w, attn_proj_b;
    at::Tensor ln_2_w, ln_2_b, fc_w, fc_b, mlp_proj_w, mlp_proj_b;
  };
  // [out, in] copies of a block's weights for `mv` (kBlas at small batches), with the versions of the parameters
  // they were made from.
  struct DecodeCopies {
    at::Tensor attn_w, attn_proj_w, fc_w, mlp_proj_w;
    int64_t versions[4] = {-1, -1, -1, -1};
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
  void InvalidateDerivedWeights() const override;

  void Activation(at::Tensor& x) const;
  const std::vector<DecodeCopies>& EnsureDecodeCopies() const;
  const at::Tensor& EnsureTransposedWte() const;
  // Our kernel also serves full forwards when no gradient is recorded (scoring, prefill): it runs about 2x
  // OpenBLAS on AVX-512 CPUs at any batch (OpenBLAS 0.3.21 uses its AVX2 kernels there).
  bool UseKernelWithoutGrad() const;
  // x [m, in] @ w [in, out] + bias.
  at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) const;

  at::Tensor wte_, wpe_, ln_f_w_, ln_f_b_;
  std::vector<Block> blocks_;
  mutable std::mutex decode_copies_mu_;
  mutable std::vector<DecodeCopies> decode_copies_;
  mutable at::Tensor wte_t_;  // [n_embd, vocab] for the AVX-512 LM head
  mutable int64_t wte_t_version_ = -1;
};

}  // namespace rlhf::model

#endif  // RLHF_COMMON_MODEL_GPT2_H_
