// A GPT-2 decoder (Radford et al. 2019; Hugging Face's GPT2Model) in LibTorch: pre-LayerNorm blocks, learned
// positions, fused QKV, GELU MLP, final LayerNorm, and three heads:
//   - LM head, tied to the token embedding wte: logits = h @ wte^T                 [batch, seq, vocab]
//   - reward head (InstructGPT's RM): r = h[last non-pad token] . score.weight + score.bias            [batch]
//     (`score.weight` [1, n_embd] as in GPT2ForSequenceClassification; `score.bias` [1] is our addition, the
//      normalisation bias; Hugging Face ignores it when loading our checkpoints)
//   - value head (PPO): v = h @ value_head.weight^T + value_head.bias, zero-initialised  [batch, seq]
//
// Checkpoints are Hugging Face's: a folder with config.json and model.safetensors, tensor names
// `transformer.h.0.attn.c_attn.weight` (the `transformer.` prefix is optional on load), Conv1D weights stored
// [in, out]. Parameters are held in that layout: it is what `addmm` wants for batched inputs and what the decode
// kernel streams (see DecodeKernel).
//
// Errors: every method returns absl::Status; no c10::Error escapes.
// Thread safety: Forward / Logits / Extend may run concurrently from several threads (each with its own
// KvCache). Changing parameters (training steps, LoadWeights) must not overlap with them.
#ifndef RLHF_COMMON_MODEL_GPT2_H_
#define RLHF_COMMON_MODEL_GPT2_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model/gpt2_config.h"
#include "common/model/safetensors.h"

namespace rlhf::model {

// How one-token decode steps on CPU multiply by the weights.
enum class DecodeKernel {
  kAuto,    // kAvx512 when the CPU has AVX-512F, else kBlas
  kAvx512,  // our small-batch kernel on the [in, out] parameters (and a [n_embd, vocab] copy of wte for the LM
            // head): streams the weights once without packing; measured on 2 cores, GPT-2-small decoding runs
            // ~1.5x faster than with OpenBLAS at batch 16 and as fast as mv at batch 1. Without gradients it also
            // serves Forward, prefill and the LM head (OpenBLAS 0.3.21 runs its AVX2 kernels on this CPU).
  kBlas,    // OpenBLAS: mv on [out, in] weight copies for batches <= mv_max_batch, addmm otherwise
};

struct Gpt2Options {
  // Where parameters, caches and outputs live. Inputs on another device are moved.
  c10::Device device = c10::kCPU;
  // Add a reward head (zero-initialised `score.weight` and `score.bias`) when the checkpoint has none. A reward head
  // is also present when config.architectures names GPT2ForSequenceClassification or the checkpoint has
  // `score.weight`.
  bool reward_head = false;
  // Add a zero-initialised value head when the checkpoint has none (present anyway if it has `value_head.weight`).
  bool value_head = false;
  DecodeKernel decode_kernel = DecodeKernel::kAuto;
  // kBlas only: decode steps with at most this many rows use `mv` on [out, in] copies of the block weights, which
  // reads the weights at memory speed (about 2x faster than `addmm` at batch 1). 0 disables them.
  // Weight copies (these, and wte's transpose for kAvx512) are made on first use and refreshed when a parameter
  // changes (tracked by the tensors' version counters; LoadWeights drops them). Code that writes parameter memory
  // directly (data_ptr) instead of through in-place tensor ops must call LoadWeights or reload the model.
  int64_t mv_max_batch = 1;
  // Seed of the random initialisation of Create (Hugging Face's: N(0, 0.02), residual projections
  // N(0, 0.02 / sqrt(2 n_layer)), LayerNorm 1/0, biases 0).
  uint64_t init_seed = 0;
  // Load: ignore tensors the model does not know instead of failing (`attn.bias` / `attn.masked_bias` buffers and a
  // tied `lm_head.weight` are always ignored).
  bool ignore_unknown_tensors = false;
};

struct NamedTensor {
  std::string name;  // checkpoint name, e.g. "transformer.h.0.attn.c_attn.weight"
  at::Tensor tensor;
};

// Which outputs Forward computes.
struct ForwardOptions {
  bool logits = true;
  bool values = false;   // needs a value head
  bool rewards = false;  // needs a reward head
  bool hidden = false;
};

struct ForwardOutput {
  at::Tensor logits;   // [batch, seq, vocab] float32, or undefined when not requested
  at::Tensor values;   // [batch, seq]
  at::Tensor rewards;  // [batch]: the reward head at the last position whose mask is 1
  at::Tensor hidden;   // [batch, seq, n_embd], after the final LayerNorm
};

// Preallocated keys/values of every layer for incremental decoding, written in place. Made and reset by
// Gpt2Model::ResetKvCache; one per concurrent decoding loop.
class KvCache {
 public:
  int64_t batch() const { return batch_; }
  int64_t capacity() const { return capacity_; }
  // Slots filled so far (the same for every row; padding slots are masked out).
  int64_t length() const { return length_; }

 private:
  friend class Gpt2Model;
  int64_t batch_ = 0;
  int64_t capacity_ = 0;
  int64_t length_ = 0;
  at::Tensor key_storage_, value_storage_, mask_storage_;  // the allocations, possibly larger than in use
  at::Tensor keys_;    // [n_layer, batch, n_head, head_dim, capacity]: transposed, so scores vectorise over slots
  at::Tensor values_;  // [n_layer, batch, n_head, capacity, head_dim]
  at::Tensor key_mask_;                                    // [batch, capacity] bool: slot holds a real token
  // Scratch of decode steps, [batch, ...].
  at::Tensor x_, h_, qkv_, attn_, proj_, fc_, logits_;
};

class Gpt2Model {
 public:
  // A randomly initialised model (Gpt2Options::init_seed).
  static absl::StatusOr<std::unique_ptr<Gpt2Model>> Create(const Gpt2Config& config, const Gpt2Options& options = {});
  // Loads `dir`/config.json and `dir`/model.safetensors (any float dtype, converted to float32). Strict: every
  // parameter must be present with its shape, except heads that Gpt2Options asks to add.
  static absl::StatusOr<std::unique_ptr<Gpt2Model>> Load(const std::string& dir, const Gpt2Options& options = {});

  // Writes `dir`/model.safetensors and `dir`/config.json (each atomically; creates `dir`), Hugging Face-loadable.
  // `metadata` goes into the safetensors header's "__metadata__" beside {"format": "pt"} (provenance, e.g. the
  // training stage and step).
  absl::Status Save(const std::string& dir, const std::map<std::string, std::string>& metadata = {}) const;
  // Replaces every parameter's value from `file` (same naming and rules as Load). Not concurrent with inference.
  absl::Status LoadWeights(const SafetensorsFile& file);
  // The tensors Save writes, by checkpoint name (CPU copies not made: they share storage with the parameters).
  std::map<std::string, at::Tensor> StateDict() const;

  const Gpt2Config& config() const { return config_; }
  const Gpt2Options& options() const { return options_; }
  c10::Device device() const { return options_.device; }
  bool has_reward_head() const { return score_w_.defined(); }
  bool has_value_head() const { return value_w_.defined(); }

  // All trainable tensors (leaf tensors with requires_grad) with their checkpoint names, in a fixed order.
  std::vector<NamedTensor> NamedParameters() const { return params_; }
  std::vector<at::Tensor> Parameters() const;
  int64_t NumParameters() const;
  // Training mode turns dropout on (config's *_pdrop); eval mode (the default) turns it off.
  void SetTraining(bool training) { training_ = training; }
  bool training() const { return training_; }
  // Replaces the dropout probabilities of training mode (e.g. InstructGPT's SFT uses residual dropout 0.2 on a
  // checkpoint saved with 0.1); Save writes them to config.json. InvalidArgument unless each is in [0, 1).
  absl::Status SetDropout(double resid_pdrop, double embd_pdrop, double attn_pdrop);

  // The model on a batch of sequences.
  //   input_ids       [batch, seq] integer token ids in [0, vocab_size)
  //   attention_mask  [batch, seq] 0/1 (integer or bool); padding on either side. Position ids are
  //                   cumsum(mask) - 1 clamped at 0 (as Hugging Face's generate does), so left padding works.
  // Autograd follows the caller's mode: run it under c10::InferenceMode (or NoGradGuard) for scoring.
  // InvalidArgument for bad shapes, ids out of range, a sequence longer than n_positions, a missing head, or
  // (with rewards) a row whose mask is all zeros.
  absl::StatusOr<ForwardOutput> Forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                        const ForwardOptions& options = {}) const;
  // LM head on final hidden states: [..., n_embd] -> [..., vocab].
  absl::StatusOr<at::Tensor> Logits(const at::Tensor& hidden) const;

  // Incremental decoding. ResetKvCache sizes `cache` for `batch` rows and `capacity` slots (reusing its memory when
  // large enough) and empties it.
  absl::Status ResetKvCache(int64_t batch, int64_t capacity, KvCache* cache) const;
  // Appends t >= 1 tokens per row at slots [length, length + t) and returns the logits of the last appended slot,
  // [batch, vocab] float32 on the model's device (may be a view of the cache's scratch: valid until the next call).
  //   input_ids [batch, t]; positions [batch, t] (position ids, < n_positions); mask [batch, t] 0/1, where 0 marks
  //   a padding slot that no later token attends to.
  // Runs under InferenceMode. One-token steps on CPU use fused kernels and no allocations of activations.
  absl::StatusOr<at::Tensor> Extend(const at::Tensor& input_ids, const at::Tensor& positions, const at::Tensor& mask,
                                    KvCache* cache) const;
  // Keeps only `rows` (strictly increasing indices into the current batch) of `cache`, renumbered 0.., so that
  // finished rows stop costing compute. Moves the kept rows' filled slots in place; no allocation.
  absl::Status KeepKvCacheRows(const std::vector<int64_t>& rows, KvCache* cache) const;

 private:
  struct Block {
    at::Tensor ln_1_w, ln_1_b, attn_w, attn_b, attn_proj_w, attn_proj_b;
    at::Tensor ln_2_w, ln_2_b, fc_w, fc_b, mlp_proj_w, mlp_proj_b;
  };
  // [out, in] copies of a block's weights for `mv`, with the versions of the parameters they were made from.
  struct DecodeCopies {
    at::Tensor attn_w, attn_proj_w, fc_w, mlp_proj_w;
    int64_t versions[4] = {-1, -1, -1, -1};
  };

  Gpt2Model(const Gpt2Config& config, const Gpt2Options& options) : config_(config), options_(options) {}
  void AllocateParameters(bool reward_head, bool value_head);
  void InitializeRandom();
  absl::Status AssignFrom(const SafetensorsFile& file, bool allow_missing_heads);

  // Throwing internals, wrapped by the public methods.
  at::Tensor Embed(const at::Tensor& ids, const at::Tensor& positions, bool dropout) const;
  // Blocks and final LayerNorm on embeddings x [b, t, e]; `blocked` [b, 1, t, start + t] masks attention. With a
  // cache, keys/values go to slots [start, start + t) and attention reads slots [0, start + t).
  at::Tensor RunBlocks(at::Tensor x, const at::Tensor& blocked, KvCache* cache, int64_t start, bool dropout) const;
  at::Tensor DecodeStepCpu(const at::Tensor& ids, const at::Tensor& positions, KvCache* cache) const;
  void Activation(at::Tensor& x) const;
  const std::vector<DecodeCopies>& EnsureDecodeCopies() const;
  const at::Tensor& EnsureTransposedWte() const;
  bool UseAvx512Kernel() const;
  // Our kernel also serves full forwards when no gradient is recorded (scoring, prefill): it runs about 2x
  // OpenBLAS on this CPU at any batch (OpenBLAS 0.3.21 uses its AVX2 kernels here).
  bool UseKernelWithoutGrad() const;
  // x [m, in] @ w [in, out] + bias, and hidden [..., n_embd] @ wte^T.
  at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) const;
  at::Tensor LmHead(const at::Tensor& hidden) const;

  Gpt2Config config_;
  Gpt2Options options_;
  bool training_ = false;
  std::vector<NamedTensor> params_;
  at::Tensor wte_, wpe_, ln_f_w_, ln_f_b_;
  std::vector<Block> blocks_;
  at::Tensor score_w_, score_b_, value_w_, value_b_;
  mutable std::mutex decode_copies_mu_;
  mutable std::vector<DecodeCopies> decode_copies_;
  mutable at::Tensor wte_t_;  // [n_embd, vocab] for the kAvx512 LM head
  mutable int64_t wte_t_version_ = -1;
};

}  // namespace rlhf::model

#endif  // RLHF_COMMON_MODEL_GPT2_H_
