// The architecture of a GPT-2 model in Hugging Face's `config.json` form (transformers' GPT2Config).
#ifndef RLHF_COMMON_MODEL_GPT2_CONFIG_H_
#define RLHF_COMMON_MODEL_GPT2_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rlhf::model {

inline constexpr char kGpt2LmHeadArchitecture[] = "GPT2LMHeadModel";
inline constexpr char kGpt2SequenceClassificationArchitecture[] = "GPT2ForSequenceClassification";

// Defaults are GPT-2 small's. Field names and meanings are Hugging Face's.
struct Gpt2Config {
  int64_t n_layer = 12;
  int64_t n_embd = 768;
  int64_t n_head = 12;
  int64_t n_positions = 1024;  // the longest sequence (prompt + response) the model can read
  int64_t vocab_size = 50257;
  std::optional<int64_t> n_inner;  // width of the MLP; absent means 4 * n_embd
  double layer_norm_epsilon = 1e-5;
  double resid_pdrop = 0.1;  // dropout probabilities, used only in training mode
  double embd_pdrop = 0.1;
  double attn_pdrop = 0.1;
  // "gelu_new" / "gelu_pytorch_tanh" (tanh approximation, GPT-2's) or "gelu" (exact erf) or "relu".
  std::string activation_function = "gelu_new";
  bool scale_attn_by_inverse_layer_idx = false;
  // Reward models: number of outputs of the sequence-classification head (`score.weight` is [num_labels, n_embd]).
  // Written as id2label/label2id like Hugging Face does.
  int64_t num_labels = 1;
  std::optional<int64_t> pad_token_id;
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> eos_token_id;
  // e.g. {"GPT2LMHeadModel"} or {"GPT2ForSequenceClassification"}.
  std::vector<std::string> architectures = {kGpt2LmHeadArchitecture};
  // Every other field of the original config.json as a JSON object, written back unchanged.
  std::string extra_json = "{}";

  int64_t head_dim() const { return n_embd / n_head; }
  int64_t inner_dim() const { return n_inner.value_or(4 * n_embd); }
  bool IsSequenceClassifier() const;

  // OK, or InvalidArgument naming the field and the reason (e.g. "n_embd=100 is not divisible by n_head=12").
  absl::Status Validate() const;

  // Parses and validates config.json text; `source` names it in errors.
  static absl::StatusOr<Gpt2Config> FromJson(absl::string_view json, absl::string_view source = "config.json");
  static absl::StatusOr<Gpt2Config> FromFile(const std::string& path);
  // Hugging Face form (model_type "gpt2", pretty-printed, keys sorted), including extra_json's fields.
  std::string ToJson() const;
  // ToJson written atomically to `path`.
  absl::Status WriteFile(const std::string& path) const;
};

}  // namespace rlhf::model

#endif  // RLHF_COMMON_MODEL_GPT2_CONFIG_H_
