// The architecture of a decoder-only language model in Hugging Face's `config.json` form, for every family the
// model core runs: GPT-2 (`model_type` "gpt2") and the Llama family ("llama", "qwen2", "qwen3", "mistral").
// LibTorch-free.
//
// Field names are Hugging Face's Llama names; GPT-2's own names map onto them when its config is read and are
// written back when it is saved (n_layer -> num_hidden_layers, n_embd -> hidden_size, n_head -> num_attention_heads,
// n_positions -> max_position_embeddings, n_inner -> intermediate_size, layer_norm_epsilon -> norm_eps,
// activation_function -> hidden_act).
#ifndef RLHF_COMMON_MODEL_MODEL_CONFIG_H_
#define RLHF_COMMON_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rlhf::model {

// Which implementation runs a model_type.
enum class ModelFamily {
  kGpt2,   // "gpt2": pre-LayerNorm, learned positions, GELU MLP, Conv1D layout, tied head
  kLlama,  // "llama", "qwen2", "qwen3", "mistral": RMSNorm, RoPE, grouped-query attention, SiLU-gated MLP
};

// "gpt2", "llama" (the family names used in messages and GetModelInfo).
absl::string_view ModelFamilyName(ModelFamily family);

// The model types the core runs, in the order messages list them.
const std::vector<std::string>& SupportedModelTypes();

// RoPE frequency scaling of Llama 3 (`rope_type` "llama3"): wavelengths longer than
// original_max_position_embeddings / low_freq_factor are divided by `factor`, shorter than
// original_max_position_embeddings / high_freq_factor kept, and the band between interpolated smoothly.
struct Llama3RopeScaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string model_type = "gpt2";

  // Shape. Defaults are GPT-2 small's; ForModelType gives each type's own.
  int64_t num_hidden_layers = 12;
  int64_t hidden_size = 768;
  int64_t num_attention_heads = 12;
  int64_t num_key_value_heads = 12;      // grouped-query attention: query head h uses kv head h / (heads / kv_heads)
  int64_t head_dim = 64;                 // Llama and Qwen3 may set it apart from hidden_size / num_attention_heads
  int64_t intermediate_size = 3072;      // MLP width (GPT-2: n_inner, absent means 4 * n_embd)
  int64_t vocab_size = 50257;
  int64_t max_position_embeddings = 1024;  // the longest sequence (prompt + response) the model reads
  bool tie_word_embeddings = true;       // the LM head is the token embedding (GPT-2 always)

  // Computation.
  double norm_eps = 1e-5;                // GPT-2 layer_norm_epsilon; Llama rms_norm_eps
  // GPT-2: "gelu_new" / "gelu_pytorch_tanh" (tanh approximation), "gelu" (erf) or "relu". Llama family: "silu".
  std::string hidden_act = "gelu_new";
  bool scale_attn_by_inverse_layer_idx = false;  // GPT-2 only
  double rope_theta = 10000.0;                   // Llama family: RoPE base
  std::optional<Llama3RopeScaling> rope_scaling;  // Llama family: absent means plain RoPE ("default")
  // Llama family biases: q/k/v_proj (Llama and Qwen3 `attention_bias`; Qwen2 always) and o_proj (Llama and Qwen3
  // `attention_bias`; Qwen2 never).
  bool attention_bias = false;
  bool o_proj_bias = false;
  bool mlp_bias = false;        // Llama's `mlp_bias`: biases on gate/up/down
  bool qk_norm = false;         // Qwen3: RMSNorm over head_dim on every head of q and k before RoPE

  // Dropout probabilities, used only in training mode. GPT-2: resid_pdrop, embd_pdrop, attn_pdrop. Llama family:
  // attn_pdrop is `attention_dropout`; residual and embedding dropout (InstructGPT's SFT uses residual dropout) are
  // this project's additions, written as `resid_pdrop` / `embd_pdrop` only when non-zero.
  double resid_pdrop = 0.1;
  double embd_pdrop = 0.1;
  double attn_pdrop = 0.1;

  // Storage type named by the checkpoint ("float32", "bfloat16", "float16"); weights are computed in float32 on CPU.
  std::string torch_dtype = "float32";

  // Reward models: outputs of the sequence-classification head (`score.weight` [num_labels, hidden_size]); written
  // as id2label/label2id like Hugging Face does.
  int64_t num_labels = 1;
  std::optional<int64_t> pad_token_id;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // config's eos_token_id: an integer or a list
  // e.g. {"GPT2LMHeadModel"}, {"Qwen2ForSequenceClassification"}.
  std::vector<std::string> architectures = {"GPT2LMHeadModel"};
  // Every other field of the original config.json as a JSON object, written back unchanged.
  std::string extra_json = "{}";

  // The defaults of a model type: GPT-2 small for "gpt2"; for the Llama family a small model of that type's layout
  // (e.g. qwen2: q/k/v biases; qwen3: q/k norm, explicit head_dim, tied). InvalidArgument for an unknown type.
  static absl::StatusOr<ModelConfig> ForModelType(absl::string_view model_type);

  // Sets the shape and what follows from it when not given (0): num_key_value_heads = heads, head_dim =
  // hidden / heads, intermediate_size = 4 * hidden (GPT-2) or 8/3 * hidden rounded up to a multiple of 32 (Llama
  // family, as SwiGLU models size it).
  void SetShape(int64_t layers, int64_t hidden, int64_t heads, int64_t kv_heads = 0, int64_t head_dim = 0,
                int64_t intermediate = 0);

  ModelFamily family() const;
  bool IsSequenceClassifier() const;  // architectures names a *ForSequenceClassification
  // The Hugging Face class names of this model type: "GPT2LMHeadModel" / "GPT2ForSequenceClassification",
  // "LlamaForCausalLM" / "LlamaForSequenceClassification", "Qwen2...", "Qwen3...", "Mistral...".
  std::string CausalLmArchitecture() const;
  std::string SequenceClassifierArchitecture() const;
  // The first EOS id, if any.
  std::optional<int64_t> eos_token_id() const;

  // Parameters of the body and LM head (heads added by options not counted), and the bytes they take in float32:
  // the bound that loaders check against the weights actually present before allocating.
  int64_t NumParameters() const;

  // OK, or InvalidArgument naming the field and the reason (e.g. "hidden_size=100 is not divisible by
  // num_attention_heads=12"). Also refuses features the core does not run (sliding windows, MoE, other RoPE
  // scalings), naming the config field.
  absl::Status Validate() const;

  // Parses and validates config.json text; `source` names it in errors. Accepts the layouts real checkpoints carry:
  // `torch_dtype` or `dtype`; `rope_theta` + `rope_scaling` (`rope_type` or legacy `type`) or transformers 5's
  // `rope_parameters`; eos_token_id as an integer or a list.
  static absl::StatusOr<ModelConfig> FromJson(absl::string_view json, absl::string_view source = "config.json");
  static absl::StatusOr<ModelConfig> FromFile(const std::string& path);
  // Hugging Face form for model_type (pretty-printed, keys sorted), including extra_json's fields.
  std::string ToJson() const;
  // ToJson written atomically to `path`.
  absl::Status WriteFile(const std::string& path) const;
};

// "architecture differs: num_hidden_layers is 2 here, 4 in the update", or OK when `update` has the family, shape
// and computation of `served` (dropout rates, token ids and architectures aside). FailedPrecondition.
absl::Status CheckSameArchitecture(const ModelConfig& served, const ModelConfig& update);

}  // namespace rlhf::model

#endif  // RLHF_COMMON_MODEL_MODEL_CONFIG_H_
