// The model interface of the core: a decoder-only language model of any supported family (model_config.h) with
// its heads, KV-cached incremental decoding, training access to its parameters, and Hugging Face checkpoints.
// The sampler, reference log-probs, reward scoring, SFT / reward-model / PPO training, weight transfer and
// checkpoint writing see only this interface; GPT-2 (gpt2.h) and the Llama family (llama.h) implement it.
//
// Heads, on every family:
//   - LM: logits = h @ W_head^T (the token embedding when tied)                          [batch, seq, vocab]
//   - reward (InstructGPT's RM; Hugging Face's *ForSequenceClassification): r = h[last position whose mask is 1]
//     . score.weight + score.bias                                                                      [batch]
//     (`score.weight` [1, hidden]; `score.bias` [1] is this project's normalisation bias, which transformers
//      ignores when loading our checkpoints)
//   - value (PPO): v = h @ value_head.weight^T + value_head.bias, zero-initialised                  [batch, seq]
//
// Errors: every method returns absl::Status; no LibTorch exception escapes (torch_boundary.h).
// Thread safety: Forward / Logits / Extend may run concurrently from several threads (each with its own KvCache).
// Changing parameters (training steps, LoadWeights) must not overlap with them.
#ifndef RLHF_COMMON_MODEL_CAUSAL_LM_H_
#define RLHF_COMMON_MODEL_CAUSAL_LM_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model/model_config.h"
#include "common/model/safetensors.h"

namespace rlhf::model {

// How one-token decode steps on CPU multiply by the weights.
enum class DecodeKernel {
  kAuto,    // the fastest kernel this CPU runs (the family's own AVX-512 kernels where the CPU has AVX-512F)
  kAvx512,  // the family's small-batch AVX-512 kernels (FailedPrecondition where the CPU lacks AVX-512F)
  kBlas,    // OpenBLAS (LibTorch's mm / mv)
};

struct ModelOptions {
  // Where parameters, caches and outputs live. Inputs on another device are moved.
  c10::Device device = c10::kCPU;
  // Add a reward head (zero-initialised `score.weight` and `score.bias`) when the checkpoint has none. A reward head
  // is also present when config.architectures names a *ForSequenceClassification or the checkpoint has
  // `score.weight`.
  bool reward_head = false;
  // Add a zero-initialised value head when the checkpoint has none (present anyway if it has `value_head.weight`).
  bool value_head = false;
  DecodeKernel decode_kernel = DecodeKernel::kAuto;
  // kBlas only: decode steps with at most this many rows use `mv` on [out, in] weights (about 2x faster than
  // `addmm` at batch 1). 0 disables it.
  int64_t mv_max_batch = 1;
  // Seed of the random initialisation of CreateModel (Hugging Face's: N(0, 0.02) for matrices, residual
  // projections of GPT-2 N(0, 0.02 / sqrt(2 n_layer)), norms 1, biases 0; heads zero).
  uint64_t init_seed = 0;
  // Load: ignore tensors the model does not know instead of failing (buffers such as GPT-2's `attn.bias`, and a
  // tied `lm_head.weight`, are always ignored).
  bool ignore_unknown_tensors = false;
};

struct NamedTensor {
  std::string name;  // checkpoint name, e.g. "model.layers.0.self_attn.q_proj.weight"
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
  at::Tensor hidden;   // [batch, seq, hidden_size], after the final norm
};

// Preallocated keys/values of every layer for incremental decoding, written in place. Made and reset by
// CausalLm::ResetKvCache; one per concurrent decoding loop. The layout is shared by every family, so that
// KeepKvCacheRows is written once:
//   keys   [num_layers, batch, kv_heads, head_dim, capacity]  (transposed, so scores vectorise over slots)
//   values [num_layers, batch, kv_heads, capacity, head_dim]
//   mask   [batch, capacity] bool: the slot holds a real token
// Each family keeps its own per-step scratch buffers ([batch, ...] each) in `scratch`.
class KvCache {
 public:
  int64_t batch() const { return batch_; }
  int64_t capacity() const { return capacity_; }
  // Slots filled so far (the same for every row; padding slots are masked out).
  int64_t length() const { return length_; }

 private:
  friend class CausalLm;
  friend class Gpt2Model;
  friend class LlamaModel;
  int64_t batch_ = 0;
  int64_t capacity_ = 0;
  int64_t length_ = 0;
  at::Tensor key_storage_, value_storage_, mask_storage_;  // the allocations, possibly larger than in use
  at::Tensor keys_, values_, key_mask_;                     // views of the rows and slots in use
  std::vector<at::Tensor> scratch_;                         // [batch, ...] each; narrowed by KeepKvCacheRows
};

class CausalLm {
 public:
  virtual ~CausalLm() = default;

  const ModelConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }
  c10::Device device() const { return options_.device; }
  bool has_reward_head() const { return score_w_.defined(); }
  bool has_value_head() const { return value_w_.defined(); }

  // Writes `dir`/config.json and the weights (`model.safetensors`, or shards of at most `max_shard_bytes` with
  // `model.safetensors.index.json` when larger), each atomically (creates `dir`), in the layout transformers reads.
  // `metadata` goes into the safetensors header's "__metadata__" beside {"format": "pt"} (provenance).
  absl::Status Save(const std::string& dir, const std::map<std::string, std::string>& metadata = {},
                    int64_t max_shard_bytes = int64_t{5} << 30) const;
  // Replaces every parameter's value from `weights` (same naming and rules as LoadModel; a head the checkpoint
  // lacks keeps its value). Not concurrent with inference. InvalidArgument naming the tensor for a missing or
  // misshaped tensor or a non-finite value; the names and shapes are checked before anything is read, but a
  // non-finite value found part-way leaves earlier parameters replaced: callers that must keep serving load into a
  // fresh model (serving::ModelStore does).
  absl::Status LoadWeights(const WeightSource& weights);
  // The tensors Save writes, by checkpoint name, in checkpoint layout (they share storage with the parameters).
  std::map<std::string, at::Tensor> StateDict() const;

  // All trainable tensors (leaf tensors with requires_grad) with their checkpoint names and shapes, in a fixed order.
  std::vector<NamedTensor> NamedParameters() const { return params_; }
  std::vector<at::Tensor> Parameters() const;
  int64_t NumParameters() const;
  // Training mode turns dropout on (config's *_pdrop); eval mode (the default) turns it off.
  void SetTraining(bool training) { training_ = training; }
  bool training() const { return training_; }
  // Replaces the dropout probabilities of training mode (e.g. InstructGPT's SFT uses residual dropout 0.2); Save
  // writes them to config.json. InvalidArgument unless each is in [0, 1).
  absl::Status SetDropout(double resid_pdrop, double embd_pdrop, double attn_pdrop);

  // The model on a batch of sequences.
  //   input_ids       [batch, seq] integer token ids in [0, vocab_size)
  //   attention_mask  [batch, seq] 0/1 (integer or bool); padding on either side. Position ids are
  //                   cumsum(mask) - 1 clamped at 0 (as Hugging Face's generate does), so left padding works.
  // Autograd follows the caller's mode: run it under c10::InferenceMode (or NoGradGuard) for scoring.
  // InvalidArgument for bad shapes, ids out of range, a sequence longer than max_position_embeddings, a missing
  // head, or (with rewards) a row whose mask is all zeros.
  absl::StatusOr<ForwardOutput> Forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                        const ForwardOptions& options = {}) const;
  // LM head on final hidden states: [..., hidden_size] -> [..., vocab].
  absl::StatusOr<at::Tensor> Logits(const at::Tensor& hidden) const;

  // Incremental decoding. ResetKvCache sizes `cache` for `batch` rows and `capacity` slots (reusing its memory when
  // large enough) and empties it.
  absl::Status ResetKvCache(int64_t batch, int64_t capacity, KvCache* cache) const;
  // Appends t >= 1 tokens per row at slots [length, length + t) and returns the logits of the last appended slot,
  // [batch, vocab] float32 on the model's device (may be a view of the cache's scratch: valid until the next call).
  //   input_ids [batch, t]; positions [batch, t] (position ids, < max_position_embeddings); mask [batch, t] 0/1,
  //   where 0 marks a padding slot that no later token attends to.
  // Runs under InferenceMode.
  absl::StatusOr<at::Tensor> Extend(const at::Tensor& input_ids, const at::Tensor& positions, const at::Tensor& mask,
                                    KvCache* cache) const;
  // Keeps only `rows` (strictly increasing indices into the current batch) of `cache`, renumbered 0.., so that
  // finished rows stop costing compute. Moves the kept rows' filled slots in place; no allocation.
  absl::Status KeepKvCacheRows(const std::vector<int64_t>& rows, KvCache* cache) const;

 protected:
  // How a parameter starts in CreateModel.
  enum class Init {
    kZero,
    kOne,
    kNormal,          // N(0, 0.02)
    kResidualNormal,  // N(0, 0.02 / sqrt(2 * num_hidden_layers)): GPT-2's residual projections
  };
  // One parameter: checkpoint name, shape, initialisation.
  struct ParameterSpec {
    std::string name;
    std::vector<int64_t> shape;
    Init init = Init::kNormal;
  };

  CausalLm(const ModelConfig& config, const ModelOptions& options) : config_(config), options_(options) {}

  // What each family implements. The compute hooks may throw c10::Error / std::exception (the public methods wrap
  // them in TorchBoundary); their inputs are already validated (ids in range, shapes consistent, int64 on the
  // model's device).
  //
  // The parameters of the body and LM head (not the reward/value heads, which the base adds), in a fixed order.
  virtual std::vector<ParameterSpec> BodySpecs() const = 0;
  // Called once params_ holds the tensors of BodySpecs (then the heads'), in that order: keep handles to them.
  virtual void BindParameters() = 0;
  // The name under which checkpoint `weights` stores parameter `name` (e.g. GPT-2's optional "transformer."
  // prefix). Default: `name`.
  virtual std::string StoredName(const std::string& name, const WeightSource& weights) const;
  // Checkpoint tensors that are not parameters and are skipped on load (buffers, a tied lm_head.weight).
  virtual bool IsIgnoredTensor(const std::string& stored_name) const;
  // Final hidden states [b, t, hidden] of ids [b, t] at `positions` [b, t]; `blocked` [b, 1, t, start + t] bool
  // masks attention that is not allowed. With a cache, keys/values go to slots [start, start + t) and attention
  // reads slots [0, start + t). Dropout when `training`.
  virtual at::Tensor HiddenStates(const at::Tensor& ids, const at::Tensor& positions, const at::Tensor& blocked,
                                  KvCache* cache, int64_t start, bool training) const = 0;
  // [..., hidden] -> [..., vocab].
  virtual at::Tensor LmHead(const at::Tensor& hidden) const = 0;
  // One decode step of every row on CPU (t == 1) at slot cache->length(): the logits [batch, vocab], typically a
  // view of the cache's scratch. The key mask of the slot is already written.
  virtual at::Tensor DecodeStepCpu(const at::Tensor& ids, const at::Tensor& positions, KvCache* cache) const = 0;
  // Allocates (or reuses, when the batch is unchanged) the family's per-step scratch in cache->scratch_.
  virtual void ResetScratch(int64_t batch, KvCache* cache) const = 0;
  // Called after parameters were replaced in place (LoadWeights): drop derived copies (transposed weights, ...).
  virtual void InvalidateDerivedWeights() const {}

  // Whether one-token CPU steps use the family's AVX-512 kernels (options and CPU allow it).
  bool UseAvx512Kernel() const;

  ModelConfig config_;
  ModelOptions options_;
  bool training_ = false;
  std::vector<NamedTensor> params_;
  at::Tensor score_w_, score_b_, value_w_, value_b_;  // heads; undefined when absent

 private:
  friend absl::StatusOr<std::unique_ptr<CausalLm>> CreateModel(const ModelConfig&, const ModelOptions&);
  friend absl::StatusOr<std::unique_ptr<CausalLm>> LoadModel(const std::string&, const ModelOptions&);
  // A new, empty model object of config.family() (the families' constructors are private; they befriend this).
  static std::unique_ptr<CausalLm> NewModel(const ModelConfig& config, const ModelOptions& options);
  std::vector<ParameterSpec> Specs(bool reward_head, bool value_head) const;
  void Allocate(const std::vector<ParameterSpec>& specs);
  void InitializeRandom(const std::vector<ParameterSpec>& specs);
  // Checks that `weights` hold every parameter of `specs` with its shape (heads may be missing when
  // `allow_missing_heads`) and nothing unknown, without reading data.
  absl::Status CheckWeights(const WeightSource& weights, const std::vector<ParameterSpec>& specs,
                            bool allow_missing_heads) const;
  // Reads every parameter present in `weights` (finite values only).
  absl::Status ReadWeights(const WeightSource& weights, bool allow_missing_heads);
};

// A randomly initialised model of config.model_type (ModelOptions::init_seed).
absl::StatusOr<std::unique_ptr<CausalLm>> CreateModel(const ModelConfig& config, const ModelOptions& options = {});

// Loads a Hugging Face checkpoint folder: `dir`/config.json and the weights (`model.safetensors`, or the shards
// named by `model.safetensors.index.json`), F32 / BF16 / F16 converted to float32. Strict: every parameter must be
// present with its shape (heads that ModelOptions asks to add aside) and finite; the config's parameter count is
// checked against the bytes actually present before anything is allocated. Errors name the file and the field or
// tensor: NotFound for a missing file, InvalidArgument for a bad one, ResourceExhausted when memory runs out.
absl::StatusOr<std::unique_ptr<CausalLm>> LoadModel(const std::string& dir, const ModelOptions& options = {});

}  // namespace rlhf::model

#endif  // RLHF_COMMON_MODEL_CAUSAL_LM_H_
