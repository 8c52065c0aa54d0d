#include "common/model/model_config.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "common/util/json_errors.h"

namespace rlhf::model {
namespace {

using Json = nlohmann::json;

absl::Status FieldError(absl::string_view field, absl::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat("field '", field, "' ", reason));
}

// Readers of one optional field: absent (or null where noted) leaves *out unchanged.
absl::Status ReadInt(const Json& j, const char* key, int64_t* out) {
  auto it = j.find(key);
  if (it == j.end()) return absl::OkStatus();
  if (!it->is_number_integer()) return FieldError(key, absl::StrCat("must be an integer, got ", it->dump()));
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadOptionalInt(const Json& j, const char* key, std::optional<int64_t>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer()) return FieldError(key, absl::StrCat("must be an integer or null, got ", it->dump()));
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadDouble(const Json& j, const char* key, double* out) {
  auto it = j.find(key);
  if (it == j.end()) return absl::OkStatus();
  if (!it->is_number()) return FieldError(key, absl::StrCat("must be a number, got ", it->dump()));
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status ReadBool(const Json& j, const char* key, bool* out) {
  auto it = j.find(key);
  if (it == j.end()) return absl::OkStatus();
  if (!it->is_boolean()) return FieldError(key, absl::StrCat("must be true or false, got ", it->dump()));
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadString(const Json& j, const char* key, std::string* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return FieldError(key, absl::StrCat("must be a string, got ", it->dump()));
  *out = it->get<std::string>();
  return absl::OkStatus();
}

// eos_token_id: an integer, a list of integers, or null.
absl::Status ReadEosIds(const Json& j, std::vector<int64_t>* out) {
  auto it = j.find("eos_token_id");
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  out->clear();
  if (it->is_number_integer()) {
    out->push_back(it->get<int64_t>());
    return absl::OkStatus();
  }
  if (!it->is_array()) return FieldError("eos_token_id", "must be an integer, a list of integers or null");
  for (const Json& v : *it) {
    if (!v.is_number_integer()) return FieldError("eos_token_id", "must be an integer, a list of integers or null");
    out->push_back(v.get<int64_t>());
  }
  return absl::OkStatus();
}

absl::Status ReadArchitectures(const Json& j, std::vector<std::string>* out) {
  auto it = j.find("architectures");
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array()) return FieldError("architectures", "must be a list of strings");
  out->clear();
  for (const Json& a : *it) {
    if (!a.is_string()) return FieldError("architectures", "must be a list of strings");
    out->push_back(a.get<std::string>());
  }
  return absl::OkStatus();
}

// Hugging Face stores num_labels implicitly as the size of id2label; an explicit num_labels wins.
absl::Status ReadNumLabels(const Json& j, int64_t* out) {
  if (auto it = j.find("id2label"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return FieldError("id2label", "must be an object");
    *out = static_cast<int64_t>(it->size());
  }
  return ReadInt(j, "num_labels", out);
}

// ---------------------------------------------------------------------------------------------------------------
// GPT-2.

constexpr const char* kGpt2Keys[] = {
    "n_layer",     "n_embd",       "n_head",      "n_positions", "vocab_size",   "n_inner",
    "layer_norm_epsilon",          "resid_pdrop", "embd_pdrop",  "attn_pdrop",   "activation_function",
    "scale_attn_by_inverse_layer_idx",            "num_labels",  "id2label",     "label2id",
    "pad_token_id", "bos_token_id", "eos_token_id", "architectures", "model_type", "tie_word_embeddings",
    "torch_dtype", "dtype",
};

absl::Status ReadGpt2(const Json& j, ModelConfig* c) {
  std::optional<int64_t> n_inner;
  RETURN_IF_ERROR(ReadInt(j, "n_layer", &c->num_hidden_layers));
  RETURN_IF_ERROR(ReadInt(j, "n_embd", &c->hidden_size));
  RETURN_IF_ERROR(ReadInt(j, "n_head", &c->num_attention_heads));
  RETURN_IF_ERROR(ReadInt(j, "n_positions", &c->max_position_embeddings));
  RETURN_IF_ERROR(ReadInt(j, "vocab_size", &c->vocab_size));
  RETURN_IF_ERROR(ReadOptionalInt(j, "n_inner", &n_inner));
  RETURN_IF_ERROR(ReadDouble(j, "layer_norm_epsilon", &c->norm_eps));
  RETURN_IF_ERROR(ReadDouble(j, "resid_pdrop", &c->resid_pdrop));
  RETURN_IF_ERROR(ReadDouble(j, "embd_pdrop", &c->embd_pdrop));
  RETURN_IF_ERROR(ReadDouble(j, "attn_pdrop", &c->attn_pdrop));
  RETURN_IF_ERROR(ReadBool(j, "scale_attn_by_inverse_layer_idx", &c->scale_attn_by_inverse_layer_idx));
  RETURN_IF_ERROR(ReadString(j, "activation_function", &c->hidden_act));
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && !(it->is_boolean() && it->get<bool>())) {
    return FieldError("tie_word_embeddings", "must be true: GPT-2's LM head is tied to wte");
  }
  c->num_key_value_heads = c->num_attention_heads;
  c->head_dim = c->num_attention_heads > 0 ? c->hidden_size / c->num_attention_heads : 0;
  c->intermediate_size = n_inner.value_or(4 * c->hidden_size);
  c->tie_word_embeddings = true;
  return absl::OkStatus();
}

void WriteGpt2(const ModelConfig& c, Json* j) {
  (*j)["n_layer"] = c.num_hidden_layers;
  (*j)["n_embd"] = c.hidden_size;
  (*j)["n_head"] = c.num_attention_heads;
  (*j)["n_positions"] = c.max_position_embeddings;
  (*j)["n_inner"] = c.intermediate_size == 4 * c.hidden_size ? Json(nullptr) : Json(c.intermediate_size);
  (*j)["layer_norm_epsilon"] = c.norm_eps;
  (*j)["resid_pdrop"] = c.resid_pdrop;
  (*j)["embd_pdrop"] = c.embd_pdrop;
  (*j)["attn_pdrop"] = c.attn_pdrop;
  (*j)["activation_function"] = c.hidden_act;
  (*j)["scale_attn_by_inverse_layer_idx"] = c.scale_attn_by_inverse_layer_idx;
}

// ---------------------------------------------------------------------------------------------------------------
// Llama family.

constexpr const char* kLlamaKeys[] = {
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "max_position_embeddings", "vocab_size", "rms_norm_eps", "hidden_act", "tie_word_embeddings",
    "rope_theta", "rope_scaling", "rope_parameters", "attention_bias", "mlp_bias", "attention_dropout",
    "resid_pdrop", "embd_pdrop", "num_labels", "id2label", "label2id", "pad_token_id", "bos_token_id",
    "eos_token_id", "architectures", "model_type", "torch_dtype", "dtype", "use_sliding_window", "sliding_window",
    "layer_types", "max_window_layers",
};

// Fields of other architectures that change the computation: present and set, the model is refused.
constexpr const char* kUnsupportedIfSet[] = {
    "num_experts", "num_local_experts", "num_experts_per_tok", "moe_intermediate_size", "quantization_config",
};

// rope_scaling (4.x) or rope_parameters (transformers 5): null, {"rope_type"/"type": "default"} or "llama3".
absl::Status ReadRope(const Json& j, ModelConfig* c) {
  const char* field = "rope_scaling";
  const Json* rope = nullptr;
  if (auto it = j.find("rope_parameters"); it != j.end() && !it->is_null()) {
    field = "rope_parameters";
    rope = &*it;
  } else if (auto it2 = j.find("rope_scaling"); it2 != j.end() && !it2->is_null()) {
    rope = &*it2;
  }
  RETURN_IF_ERROR(ReadDouble(j, "rope_theta", &c->rope_theta));
  c->rope_scaling.reset();
  if (rope == nullptr) return absl::OkStatus();
  if (!rope->is_object()) return FieldError(field, "must be an object or null");
  auto sub = [&](absl::Status s) {
    if (s.ok()) return s;
    return absl::InvalidArgumentError(absl::StrCat("in ", field, ": ", s.message()));
  };
  RETURN_IF_ERROR(sub(ReadDouble(*rope, "rope_theta", &c->rope_theta)));
  std::string type = "default";
  RETURN_IF_ERROR(sub(ReadString(*rope, "type", &type)));
  RETURN_IF_ERROR(sub(ReadString(*rope, "rope_type", &type)));
  if (type == "default") return absl::OkStatus();
  if (type != "llama3") {
    return FieldError(absl::StrCat(field, ".rope_type"),
                      absl::StrCat("'", type, "' is not supported (default and llama3 are)"));
  }
  Llama3RopeScaling s;
  RETURN_IF_ERROR(sub(ReadDouble(*rope, "factor", &s.factor)));
  RETURN_IF_ERROR(sub(ReadDouble(*rope, "low_freq_factor", &s.low_freq_factor)));
  RETURN_IF_ERROR(sub(ReadDouble(*rope, "high_freq_factor", &s.high_freq_factor)));
  RETURN_IF_ERROR(sub(ReadInt(*rope, "original_max_position_embeddings", &s.original_max_position_embeddings)));
  c->rope_scaling = s;
  return absl::OkStatus();
}

absl::Status ReadLlama(const Json& j, ModelConfig* c) {
  for (const char* key : kUnsupportedIfSet) {
    auto it = j.find(key);
    if (it != j.end() && !it->is_null() && !(it->is_number() && it->get<double>() == 0)) {
      return FieldError(key, absl::StrCat("is set (", it->dump(), "): mixture-of-experts and quantised models are "
                                          "not supported"));
    }
  }
  RETURN_IF_ERROR(ReadInt(j, "num_hidden_layers", &c->num_hidden_layers));
  RETURN_IF_ERROR(ReadInt(j, "hidden_size", &c->hidden_size));
  RETURN_IF_ERROR(ReadInt(j, "num_attention_heads", &c->num_attention_heads));
  c->num_key_value_heads = c->num_attention_heads;
  RETURN_IF_ERROR(ReadInt(j, "num_key_value_heads", &c->num_key_value_heads));
  c->head_dim = c->num_attention_heads > 0 ? c->hidden_size / c->num_attention_heads : 0;
  if (c->model_type != "qwen2") {  // Qwen2 has no head_dim field: always hidden_size / num_attention_heads
    std::optional<int64_t> head_dim;
    RETURN_IF_ERROR(ReadOptionalInt(j, "head_dim", &head_dim));
    if (head_dim.has_value()) c->head_dim = *head_dim;
  }
  RETURN_IF_ERROR(ReadInt(j, "intermediate_size", &c->intermediate_size));
  RETURN_IF_ERROR(ReadInt(j, "max_position_embeddings", &c->max_position_embeddings));
  RETURN_IF_ERROR(ReadInt(j, "vocab_size", &c->vocab_size));
  RETURN_IF_ERROR(ReadDouble(j, "rms_norm_eps", &c->norm_eps));
  RETURN_IF_ERROR(ReadString(j, "hidden_act", &c->hidden_act));
  RETURN_IF_ERROR(ReadBool(j, "tie_word_embeddings", &c->tie_word_embeddings));
  RETURN_IF_ERROR(ReadRope(j, c));
  RETURN_IF_ERROR(ReadDouble(j, "attention_dropout", &c->attn_pdrop));
  RETURN_IF_ERROR(ReadDouble(j, "resid_pdrop", &c->resid_pdrop));
  RETURN_IF_ERROR(ReadDouble(j, "embd_pdrop", &c->embd_pdrop));
  if (c->model_type == "qwen2") {
    c->attention_bias = true;  // Qwen2Attention: q/k/v with bias, o without, whatever the config says
    c->o_proj_bias = false;
  } else {
    bool bias = false;
    RETURN_IF_ERROR(ReadBool(j, "attention_bias", &bias));
    c->attention_bias = bias;
    c->o_proj_bias = bias;
  }
  if (c->model_type == "llama") RETURN_IF_ERROR(ReadBool(j, "mlp_bias", &c->mlp_bias));
  c->qk_norm = c->model_type == "qwen3";

  // Sliding-window attention is refused unless it is off or wider than any sequence the model reads.
  bool use_sliding_window = false;
  RETURN_IF_ERROR(ReadBool(j, "use_sliding_window", &use_sliding_window));
  std::optional<int64_t> sliding_window;
  RETURN_IF_ERROR(ReadOptionalInt(j, "sliding_window", &sliding_window));
  const bool window_always_applies = c->model_type == "mistral";  // Qwen applies it only with use_sliding_window
  if ((use_sliding_window || window_always_applies) && sliding_window.has_value() &&
      *sliding_window < c->max_position_embeddings) {
    return FieldError("sliding_window", absl::StrCat(*sliding_window, " is shorter than max_position_embeddings=",
                                                     c->max_position_embeddings,
                                                     ": sliding-window attention is not supported"));
  }
  if (auto it = j.find("layer_types"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return FieldError("layer_types", "must be a list of strings");
    for (size_t i = 0; i < it->size(); ++i) {
      const Json& t = (*it)[i];
      if (!t.is_string() || t.get<std::string>() != "full_attention") {
        return FieldError(absl::StrCat("layer_types[", i, "]"),
                          absl::StrCat("is ", t.dump(), ": only full_attention layers are supported"));
      }
    }
  }
  return absl::OkStatus();
}

void WriteLlama(const ModelConfig& c, Json* j) {
  (*j)["num_hidden_layers"] = c.num_hidden_layers;
  (*j)["hidden_size"] = c.hidden_size;
  (*j)["num_attention_heads"] = c.num_attention_heads;
  (*j)["num_key_value_heads"] = c.num_key_value_heads;
  if (c.model_type != "qwen2") (*j)["head_dim"] = c.head_dim;
  (*j)["intermediate_size"] = c.intermediate_size;
  (*j)["max_position_embeddings"] = c.max_position_embeddings;
  (*j)["rms_norm_eps"] = c.norm_eps;
  (*j)["hidden_act"] = c.hidden_act;
  (*j)["tie_word_embeddings"] = c.tie_word_embeddings;
  (*j)["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.has_value()) {
    const Llama3RopeScaling& s = *c.rope_scaling;
    (*j)["rope_scaling"] = Json{{"rope_type", "llama3"},
                                {"factor", s.factor},
                                {"low_freq_factor", s.low_freq_factor},
                                {"high_freq_factor", s.high_freq_factor},
                                {"original_max_position_embeddings", s.original_max_position_embeddings}};
  } else {
    (*j)["rope_scaling"] = nullptr;
  }
  if (c.model_type != "qwen2") (*j)["attention_bias"] = c.attention_bias;
  if (c.model_type == "llama") (*j)["mlp_bias"] = c.mlp_bias;
  if (c.model_type == "qwen2" || c.model_type == "qwen3") {
    (*j)["use_sliding_window"] = false;
    (*j)["sliding_window"] = nullptr;
  }
  (*j)["attention_dropout"] = c.attn_pdrop;
  if (c.resid_pdrop != 0) (*j)["resid_pdrop"] = c.resid_pdrop;
  if (c.embd_pdrop != 0) (*j)["embd_pdrop"] = c.embd_pdrop;
}

struct TypeInfo {
  const char* model_type;
  ModelFamily family;
  const char* class_prefix;  // "Llama" -> LlamaForCausalLM / LlamaForSequenceClassification
};

constexpr TypeInfo kTypes[] = {
    {"gpt2", ModelFamily::kGpt2, "GPT2"},
    {"llama", ModelFamily::kLlama, "Llama"},
    {"qwen2", ModelFamily::kLlama, "Qwen2"},
    {"qwen3", ModelFamily::kLlama, "Qwen3"},
    {"mistral", ModelFamily::kLlama, "Mistral"},
};

const TypeInfo* FindType(absl::string_view model_type) {
  for (const TypeInfo& t : kTypes) {
    if (model_type == t.model_type) return &t;
  }
  return nullptr;
}

absl::Status UnknownType(absl::string_view model_type) {
  return FieldError("model_type", absl::StrCat("'", model_type, "' is not supported (",
                                               absl::StrJoin(SupportedModelTypes(), ", "), " are)"));
}

absl::Status WithSource(absl::string_view source, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(source, ": ", status.message()));
}

}  // namespace

absl::string_view ModelFamilyName(ModelFamily family) {
  switch (family) {
    case ModelFamily::kGpt2:
      return "gpt2";
    case ModelFamily::kLlama:
      return "llama";
  }
  return "unknown";
}

const std::vector<std::string>& SupportedModelTypes() {
  static const auto* types = [] {
    auto* v = new std::vector<std::string>();
    for (const TypeInfo& t : kTypes) v->push_back(t.model_type);
    return v;
  }();
  return *types;
}

absl::StatusOr<ModelConfig> ModelConfig::ForModelType(absl::string_view model_type) {
  const TypeInfo* type = FindType(model_type);
  if (type == nullptr) return UnknownType(model_type);
  ModelConfig c;
  c.model_type = std::string(model_type);
  if (type->family == ModelFamily::kGpt2) {
    c.architectures = {c.CausalLmArchitecture()};
    return c;
  }
  // The layout of a small real model of each type (SmolLM2-135M, Qwen2.5-0.5B, Qwen3-0.6B, Mistral-style with
  // SmolLM2's shape); sizes are usually overridden.
  c.hidden_act = "silu";
  c.resid_pdrop = c.embd_pdrop = c.attn_pdrop = 0.0;
  if (model_type == "qwen2") {
    c.num_hidden_layers = 24;
    c.hidden_size = 896;
    c.num_attention_heads = 14;
    c.num_key_value_heads = 2;
    c.head_dim = 64;
    c.intermediate_size = 4864;
    c.vocab_size = 151936;
    c.max_position_embeddings = 32768;
    c.norm_eps = 1e-6;
    c.rope_theta = 1e6;
    c.tie_word_embeddings = true;
    c.attention_bias = true;
  } else if (model_type == "qwen3") {
    c.num_hidden_layers = 28;
    c.hidden_size = 1024;
    c.num_attention_heads = 16;
    c.num_key_value_heads = 8;
    c.head_dim = 128;
    c.intermediate_size = 3072;
    c.vocab_size = 151936;
    c.max_position_embeddings = 40960;
    c.norm_eps = 1e-6;
    c.rope_theta = 1e6;
    c.tie_word_embeddings = true;
    c.qk_norm = true;
  } else {  // llama, mistral
    c.num_hidden_layers = 30;
    c.hidden_size = 576;
    c.num_attention_heads = 9;
    c.num_key_value_heads = 3;
    c.head_dim = 64;
    c.intermediate_size = 1536;
    c.vocab_size = 49152;
    c.max_position_embeddings = 8192;
    c.norm_eps = 1e-5;
    c.rope_theta = 100000.0;
    c.tie_word_embeddings = true;
  }
  c.architectures = {c.CausalLmArchitecture()};
  return c;
}

void ModelConfig::SetShape(int64_t layers, int64_t hidden, int64_t heads, int64_t kv_heads, int64_t head_dim_,
                           int64_t intermediate) {
  num_hidden_layers = layers;
  hidden_size = hidden;
  num_attention_heads = heads;
  num_key_value_heads = kv_heads > 0 ? kv_heads : heads;
  head_dim = head_dim_ > 0 ? head_dim_ : (heads > 0 ? hidden / heads : 0);
  if (intermediate > 0) {
    intermediate_size = intermediate;
  } else if (family() == ModelFamily::kGpt2) {
    intermediate_size = 4 * hidden;
  } else {
    intermediate_size = (8 * hidden / 3 + 31) / 32 * 32;
  }
}

ModelFamily ModelConfig::family() const {
  const TypeInfo* type = FindType(model_type);
  return type != nullptr ? type->family : ModelFamily::kGpt2;
}

bool ModelConfig::IsSequenceClassifier() const {
  return std::any_of(architectures.begin(), architectures.end(),
                     [](const std::string& a) { return absl::EndsWith(a, "ForSequenceClassification"); });
}

std::string ModelConfig::CausalLmArchitecture() const {
  const TypeInfo* type = FindType(model_type);
  if (type == nullptr) return "";
  return absl::StrCat(type->class_prefix, type->family == ModelFamily::kGpt2 ? "LMHeadModel" : "ForCausalLM");
}

std::string ModelConfig::SequenceClassifierArchitecture() const {
  const TypeInfo* type = FindType(model_type);
  if (type == nullptr) return "";
  return absl::StrCat(type->class_prefix, "ForSequenceClassification");
}

std::optional<int64_t> ModelConfig::eos_token_id() const {
  if (eos_token_ids.empty()) return std::nullopt;
  return eos_token_ids.front();
}

int64_t ModelConfig::NumParameters() const {
  // Computed in double and clamped, so that absurd configs give a huge count instead of overflowing.
  const double h = static_cast<double>(hidden_size), layers = static_cast<double>(num_hidden_layers);
  const double q = static_cast<double>(num_attention_heads) * static_cast<double>(head_dim);
  const double kv = static_cast<double>(num_key_value_heads) * static_cast<double>(head_dim);
  const double inner = static_cast<double>(intermediate_size), vocab = static_cast<double>(vocab_size);
  double n = vocab * h;
  if (family() == ModelFamily::kGpt2) {
    n += static_cast<double>(max_position_embeddings) * h;
    n += layers * (4 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * inner + inner) + (inner * h + h));
    n += 2 * h;
  } else {
    double per_layer = 2 * h + h * q + 2 * h * kv + q * h + 3 * h * inner;
    if (attention_bias) per_layer += q + 2 * kv;
    if (o_proj_bias) per_layer += h;
    if (mlp_bias) per_layer += 2 * inner + h;
    if (qk_norm) per_layer += 2 * static_cast<double>(head_dim);
    n += layers * per_layer + h;
    if (!tie_word_embeddings) n += vocab * h;
  }
  constexpr double kMax = 4.0e18;
  return static_cast<int64_t>(std::min(n, kMax));
}

absl::Status ModelConfig::Validate() const {
  if (FindType(model_type) == nullptr) return UnknownType(model_type);
  const bool gpt2 = family() == ModelFamily::kGpt2;
  auto positive = [&](const char* llama_name, const char* gpt2_name, int64_t v) -> absl::Status {
    if (v <= 0) return FieldError(gpt2 ? gpt2_name : llama_name, absl::StrCat("must be positive, got ", v));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(positive("num_hidden_layers", "n_layer", num_hidden_layers));
  RETURN_IF_ERROR(positive("hidden_size", "n_embd", hidden_size));
  RETURN_IF_ERROR(positive("num_attention_heads", "n_head", num_attention_heads));
  RETURN_IF_ERROR(positive("num_key_value_heads", "n_head", num_key_value_heads));
  RETURN_IF_ERROR(positive("head_dim", "n_head", head_dim));
  RETURN_IF_ERROR(positive("intermediate_size", "n_inner", intermediate_size));
  RETURN_IF_ERROR(positive("max_position_embeddings", "n_positions", max_position_embeddings));
  RETURN_IF_ERROR(positive("vocab_size", "vocab_size", vocab_size));
  RETURN_IF_ERROR(positive("num_labels", "num_labels", num_labels));
  if (gpt2) {
    if (hidden_size % num_attention_heads != 0) {
      return FieldError("n_embd", absl::StrCat(hidden_size, " is not divisible by n_head=", num_attention_heads));
    }
    if (num_key_value_heads != num_attention_heads || head_dim != hidden_size / num_attention_heads) {
      return FieldError("n_head", "GPT-2 has neither grouped-query attention nor a separate head_dim");
    }
    if (!tie_word_embeddings) return FieldError("tie_word_embeddings", "must be true: GPT-2's LM head is tied");
    if (hidden_act != "gelu_new" && hidden_act != "gelu_pytorch_tanh" && hidden_act != "gelu" &&
        hidden_act != "relu") {
      return FieldError("activation_function", absl::StrCat("'", hidden_act,
                                                            "' is not supported (gelu_new, gelu_pytorch_tanh, "
                                                            "gelu, relu are)"));
    }
    if (!(norm_eps > 0)) return FieldError("layer_norm_epsilon", absl::StrCat("must be positive, got ", norm_eps));
  } else {
    if (num_attention_heads % num_key_value_heads != 0) {
      return FieldError("num_key_value_heads", absl::StrCat(num_key_value_heads,
                                                            " does not divide num_attention_heads=",
                                                            num_attention_heads));
    }
    if (model_type == "qwen2" && head_dim * num_attention_heads != hidden_size) {
      return FieldError("hidden_size", absl::StrCat(hidden_size, " is not divisible by num_attention_heads=",
                                                    num_attention_heads));
    }
    if (head_dim % 2 != 0) return FieldError("head_dim", absl::StrCat("must be even for RoPE, got ", head_dim));
    if (hidden_act != "silu") {
      return FieldError("hidden_act", absl::StrCat("'", hidden_act, "' is not supported (silu is)"));
    }
    if (!(norm_eps > 0)) return FieldError("rms_norm_eps", absl::StrCat("must be positive, got ", norm_eps));
    if (!(rope_theta > 0) || !std::isfinite(rope_theta)) {
      return FieldError("rope_theta", absl::StrCat("must be positive, got ", rope_theta));
    }
    if (rope_scaling.has_value()) {
      const Llama3RopeScaling& s = *rope_scaling;
      if (!(s.factor > 0) || !(s.low_freq_factor > 0) || !(s.high_freq_factor > s.low_freq_factor) ||
          s.original_max_position_embeddings <= 0) {
        return FieldError("rope_scaling", "needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
                                          "original_max_position_embeddings > 0");
      }
    }
    if (model_type == "qwen3" && !qk_norm) return FieldError("model_type", "qwen3 always has q/k norms");
  }
  const std::pair<const char*, double> probabilities[] = {
      {"resid_pdrop", resid_pdrop}, {"embd_pdrop", embd_pdrop}, {gpt2 ? "attn_pdrop" : "attention_dropout",
                                                                  attn_pdrop}};
  for (const auto& [field, p] : probabilities) {
    if (!(p >= 0 && p < 1)) return FieldError(field, absl::StrCat("must be in [0, 1), got ", p));
  }
  if (torch_dtype != "float32" && torch_dtype != "bfloat16" && torch_dtype != "float16") {
    return FieldError("torch_dtype", absl::StrCat("'", torch_dtype, "' is not supported (float32, bfloat16, "
                                                  "float16 are)"));
  }
  // Token ids are not checked against vocab_size: defaults of other vocabularies (GPT-2's 50256) survive in the
  // configs of models with smaller ones, and transformers accepts them.
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(absl::string_view json, absl::string_view source) {
  Json j;
  try {
    j = Json::parse(json.begin(), json.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": bad JSON: ", util::JsonErrorText(e.what())));
  }
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  std::string model_type = "gpt2";  // configs of old GPT-2 checkpoints have no model_type
  RETURN_IF_ERROR(WithSource(source, ReadString(j, "model_type", &model_type)));
  if (FindType(model_type) == nullptr) return WithSource(source, UnknownType(model_type));
  ModelConfig c = *ForModelType(model_type);
  const bool gpt2 = c.family() == ModelFamily::kGpt2;
  absl::Status status = gpt2 ? ReadGpt2(j, &c) : ReadLlama(j, &c);
  if (status.ok()) status = ReadString(j, "torch_dtype", &c.torch_dtype);
  if (status.ok()) status = ReadString(j, "dtype", &c.torch_dtype);
  if (status.ok()) status = ReadOptionalInt(j, "pad_token_id", &c.pad_token_id);
  if (status.ok()) status = ReadOptionalInt(j, "bos_token_id", &c.bos_token_id);
  if (status.ok()) status = ReadEosIds(j, &c.eos_token_ids);
  if (status.ok()) status = ReadArchitectures(j, &c.architectures);
  if (status.ok()) status = ReadNumLabels(j, &c.num_labels);
  if (status.ok()) status = c.Validate();
  RETURN_IF_ERROR(WithSource(source, status));

  std::set<std::string> known;
  if (gpt2) {
    known.insert(std::begin(kGpt2Keys), std::end(kGpt2Keys));
  } else {
    known.insert(std::begin(kLlamaKeys), std::end(kLlamaKeys));
  }
  Json extra = Json::object();
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (known.count(it.key()) == 0) extra[it.key()] = it.value();
  }
  c.extra_json = extra.dump();
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, util::ReadFile(path));
  return FromJson(text, path);
}

std::string ModelConfig::ToJson() const {
  Json j = Json::parse(extra_json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) j = Json::object();
  auto optional = [](const std::optional<int64_t>& v) { return v.has_value() ? Json(*v) : Json(nullptr); };
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  if (family() == ModelFamily::kGpt2) {
    WriteGpt2(*this, &j);
    j["tie_word_embeddings"] = true;
  } else {
    WriteLlama(*this, &j);
  }
  j["torch_dtype"] = torch_dtype;
  j["pad_token_id"] = optional(pad_token_id);
  j["bos_token_id"] = optional(bos_token_id);
  if (eos_token_ids.empty()) {
    j["eos_token_id"] = nullptr;
  } else if (eos_token_ids.size() == 1) {
    j["eos_token_id"] = eos_token_ids.front();
  } else {
    j["eos_token_id"] = eos_token_ids;
  }
  j["architectures"] = architectures;
  Json id2label = Json::object();
  Json label2id = Json::object();
  for (int64_t i = 0; i < num_labels; ++i) {
    id2label[std::to_string(i)] = absl::StrCat("LABEL_", i);
    label2id[absl::StrCat("LABEL_", i)] = i;
  }
  j["id2label"] = std::move(id2label);
  j["label2id"] = std::move(label2id);
  return j.dump(2) + "\n";
}

absl::Status ModelConfig::WriteFile(const std::string& path) const {
  return util::WriteFileAtomically(path, ToJson());
}

absl::Status CheckSameArchitecture(const ModelConfig& served, const ModelConfig& update) {
  auto differs = [](const char* field, auto here, auto there) {
    return absl::FailedPreconditionError(
        absl::StrCat("architecture differs: ", field, " is ", here, " here, ", there, " in the update"));
  };
  if (served.model_type != update.model_type) return differs("model_type", served.model_type, update.model_type);
#define RLHF_SAME(field) \
  if (served.field != update.field) return differs(#field, served.field, update.field)
  RLHF_SAME(num_hidden_layers);
  RLHF_SAME(hidden_size);
  RLHF_SAME(num_attention_heads);
  RLHF_SAME(num_key_value_heads);
  RLHF_SAME(head_dim);
  RLHF_SAME(intermediate_size);
  RLHF_SAME(vocab_size);
  RLHF_SAME(max_position_embeddings);
  RLHF_SAME(tie_word_embeddings);
  RLHF_SAME(norm_eps);
  RLHF_SAME(hidden_act);
  RLHF_SAME(scale_attn_by_inverse_layer_idx);
  RLHF_SAME(rope_theta);
  RLHF_SAME(attention_bias);
  RLHF_SAME(o_proj_bias);
  RLHF_SAME(mlp_bias);
  RLHF_SAME(qk_norm);
#undef RLHF_SAME
  if (served.rope_scaling.has_value() != update.rope_scaling.has_value() ||
      (served.rope_scaling.has_value() &&
       (served.rope_scaling->factor != update.rope_scaling->factor ||
        served.rope_scaling->low_freq_factor != update.rope_scaling->low_freq_factor ||
        served.rope_scaling->high_freq_factor != update.rope_scaling->high_freq_factor ||
        served.rope_scaling->original_max_position_embeddings !=
            update.rope_scaling->original_max_position_embeddings))) {
    return absl::FailedPreconditionError("architecture differs: rope_scaling differs from the served model's");
  }
  return absl::OkStatus();
}

}  // namespace rlhf::model
