#include "common/model/gpt2_config.h"

#include <algorithm>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"

namespace rlhf::model {
namespace {

using Json = nlohmann::json;

// Keys this struct interprets; everything else goes to extra_json.
constexpr const char* kKnownKeys[] = {
    "n_layer",     "n_embd",      "n_head",      "n_positions",        "vocab_size",
    "n_inner",     "layer_norm_epsilon",         "resid_pdrop",        "embd_pdrop",
    "attn_pdrop",  "activation_function",        "scale_attn_by_inverse_layer_idx",
    "num_labels",  "id2label",    "label2id",    "pad_token_id",       "bos_token_id",
    "eos_token_id", "architectures", "model_type", "tie_word_embeddings",
};

absl::Status FieldError(absl::string_view source, absl::string_view field, absl::string_view reason) {
  return absl::InvalidArgumentError(
      absl::StrCat(source, source.empty() ? "" : ": ", "field '", field, "' ", reason));
}

absl::Status ReadInt(const Json& j, absl::string_view source, const char* key, int64_t* out) {
  auto it = j.find(key);
  if (it == j.end()) return absl::OkStatus();
  if (!it->is_number_integer()) return FieldError(source, key, absl::StrCat("must be an integer, got ", it->dump()));
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadOptionalInt(const Json& j, absl::string_view source, const char* key, std::optional<int64_t>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (it->is_array() && key != std::string("n_inner") && !it->empty() && (*it)[0].is_number_integer()) {
    *out = (*it)[0].get<int64_t>();  // transformers allows a list of eos ids; the first is the one we keep
    return absl::OkStatus();
  }
  if (!it->is_number_integer()) {
    return FieldError(source, key, absl::StrCat("must be an integer or null, got ", it->dump()));
  }
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadDouble(const Json& j, absl::string_view source, const char* key, double* out) {
  auto it = j.find(key);
  if (it == j.end()) return absl::OkStatus();
  if (!it->is_number()) return FieldError(source, key, absl::StrCat("must be a number, got ", it->dump()));
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status ReadBool(const Json& j, absl::string_view source, const char* key, bool* out) {
  auto it = j.find(key);
  if (it == j.end()) return absl::OkStatus();
  if (!it->is_boolean()) return FieldError(source, key, absl::StrCat("must be true or false, got ", it->dump()));
  *out = it->get<bool>();
  return absl::OkStatus();
}

}  // namespace

bool Gpt2Config::IsSequenceClassifier() const {
  return std::find(architectures.begin(), architectures.end(), kGpt2SequenceClassificationArchitecture) !=
         architectures.end();
}

absl::Status Gpt2Config::Validate() const {
  const absl::string_view source = "";  // FromJson adds the file name
  auto positive = [&](const char* field, int64_t v) -> absl::Status {
    if (v <= 0) return FieldError(source, field, absl::StrCat("must be positive, got ", v));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(positive("n_layer", n_layer));
  RETURN_IF_ERROR(positive("n_embd", n_embd));
  RETURN_IF_ERROR(positive("n_head", n_head));
  RETURN_IF_ERROR(positive("n_positions", n_positions));
  RETURN_IF_ERROR(positive("vocab_size", vocab_size));
  RETURN_IF_ERROR(positive("num_labels", num_labels));
  if (n_inner.has_value()) RETURN_IF_ERROR(positive("n_inner", *n_inner));
  if (n_embd % n_head != 0) {
    return FieldError(source, "n_embd", absl::StrCat(n_embd, " is not divisible by n_head=", n_head));
  }
  if (!(layer_norm_epsilon > 0)) {
    return FieldError(source, "layer_norm_epsilon", absl::StrCat("must be positive, got ", layer_norm_epsilon));
  }
  const std::pair<const char*, double> probabilities[] = {
      {"resid_pdrop", resid_pdrop}, {"embd_pdrop", embd_pdrop}, {"attn_pdrop", attn_pdrop}};
  for (const auto& [field, p] : probabilities) {
    if (!(p >= 0 && p < 1)) return FieldError(source, field, absl::StrCat("must be in [0, 1), got ", p));
  }
  if (activation_function != "gelu_new" && activation_function != "gelu_pytorch_tanh" &&
      activation_function != "gelu" && activation_function != "relu") {
    return FieldError(source, "activation_function",
                      absl::StrCat("'", activation_function,
                                   "' is not supported (gelu_new, gelu_pytorch_tanh, gelu, relu are)"));
  }
  // Token ids are not checked against vocab_size: Hugging Face's defaults (bos/eos 50256) survive in configs of
  // models with other vocabularies, and transformers accepts them.
  return absl::OkStatus();
}

absl::StatusOr<Gpt2Config> Gpt2Config::FromJson(absl::string_view json, absl::string_view source) {
  Json j;
  try {
    j = Json::parse(json.begin(), json.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": bad JSON: ", e.what()));
  }
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  auto model_type = j.find("model_type");
  if (model_type != j.end() && (!model_type->is_string() || model_type->get<std::string>() != "gpt2")) {
    return FieldError(source, "model_type", absl::StrCat("must be \"gpt2\", got ", model_type->dump()));
  }
  Gpt2Config c;
  RETURN_IF_ERROR(ReadInt(j, source, "n_layer", &c.n_layer));
  RETURN_IF_ERROR(ReadInt(j, source, "n_embd", &c.n_embd));
  RETURN_IF_ERROR(ReadInt(j, source, "n_head", &c.n_head));
  RETURN_IF_ERROR(ReadInt(j, source, "n_positions", &c.n_positions));
  RETURN_IF_ERROR(ReadInt(j, source, "vocab_size", &c.vocab_size));
  RETURN_IF_ERROR(ReadOptionalInt(j, source, "n_inner", &c.n_inner));
  RETURN_IF_ERROR(ReadDouble(j, source, "layer_norm_epsilon", &c.layer_norm_epsilon));
  RETURN_IF_ERROR(ReadDouble(j, source, "resid_pdrop", &c.resid_pdrop));
  RETURN_IF_ERROR(ReadDouble(j, source, "embd_pdrop", &c.embd_pdrop));
  RETURN_IF_ERROR(ReadDouble(j, source, "attn_pdrop", &c.attn_pdrop));
  RETURN_IF_ERROR(ReadBool(j, source, "scale_attn_by_inverse_layer_idx", &c.scale_attn_by_inverse_layer_idx));
  RETURN_IF_ERROR(ReadOptionalInt(j, source, "pad_token_id", &c.pad_token_id));
  RETURN_IF_ERROR(ReadOptionalInt(j, source, "bos_token_id", &c.bos_token_id));
  RETURN_IF_ERROR(ReadOptionalInt(j, source, "eos_token_id", &c.eos_token_id));
  if (auto it = j.find("activation_function"); it != j.end()) {
    if (!it->is_string()) return FieldError(source, "activation_function", "must be a string");
    c.activation_function = it->get<std::string>();
  }
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && !(it->is_boolean() && it->get<bool>())) {
    return FieldError(source, "tie_word_embeddings", "must be true: the LM head is tied to wte");
  }
  if (auto it = j.find("architectures"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return FieldError(source, "architectures", "must be a list of strings");
    c.architectures.clear();
    for (const Json& a : *it) {
      if (!a.is_string()) return FieldError(source, "architectures", "must be a list of strings");
      c.architectures.push_back(a.get<std::string>());
    }
  }
  // Hugging Face stores num_labels implicitly as the size of id2label; accept an explicit num_labels too.
  if (auto it = j.find("id2label"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return FieldError(source, "id2label", "must be an object");
    c.num_labels = static_cast<int64_t>(it->size());
  }
  RETURN_IF_ERROR(ReadInt(j, source, "num_labels", &c.num_labels));

  Json extra = Json::object();
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (std::find_if(std::begin(kKnownKeys), std::end(kKnownKeys),
                     [&](const char* k) { return it.key() == k; }) == std::end(kKnownKeys)) {
      extra[it.key()] = it.value();
    }
  }
  c.extra_json = extra.dump();

  absl::Status status = c.Validate();
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat(source, ": ", status.message()));
  }
  return c;
}

absl::StatusOr<Gpt2Config> Gpt2Config::FromFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, util::ReadFile(path));
  return FromJson(text, path);
}

std::string Gpt2Config::ToJson() const {
  Json j = Json::parse(extra_json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) j = Json::object();
  auto optional = [](const std::optional<int64_t>& v) { return v.has_value() ? Json(*v) : Json(nullptr); };
  j["model_type"] = "gpt2";
  j["n_layer"] = n_layer;
  j["n_embd"] = n_embd;
  j["n_head"] = n_head;
  j["n_positions"] = n_positions;
  j["vocab_size"] = vocab_size;
  j["n_inner"] = optional(n_inner);
  j["layer_norm_epsilon"] = layer_norm_epsilon;
  j["resid_pdrop"] = resid_pdrop;
  j["embd_pdrop"] = embd_pdrop;
  j["attn_pdrop"] = attn_pdrop;
  j["activation_function"] = activation_function;
  j["scale_attn_by_inverse_layer_idx"] = scale_attn_by_inverse_layer_idx;
  j["pad_token_id"] = optional(pad_token_id);
  j["bos_token_id"] = optional(bos_token_id);
  j["eos_token_id"] = optional(eos_token_id);
  j["tie_word_embeddings"] = true;
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

absl::Status Gpt2Config::WriteFile(const std::string& path) const {
  return util::WriteFileAtomically(path, ToJson());
}

}  // namespace rlhf::model
