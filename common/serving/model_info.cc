#include "common/serving/model_info.h"

#include "common/model/causal_lm.h"
#include "common/runtime/status_util.h"
#include "google/protobuf/util/time_util.h"

namespace rlhf::serving {

void FillModelId(const ServedModel& served, v1::ModelId* id) {
  id->set_name(runtime::Utf8Safe(served.name));  // a folder's name: any bytes
  id->set_version(served.version);
}

v1::TokenizerKind ToTokenizerKind(const std::string& kind) {
  if (kind == tokenizer::kGpt2BpeKind) return v1::TOKENIZER_KIND_GPT2_BPE;
  if (kind == tokenizer::kHfBpeKind) return v1::TOKENIZER_KIND_HF_BPE;
  if (kind == tokenizer::kByteKind) return v1::TOKENIZER_KIND_BYTE;
  if (kind == tokenizer::kWordKind) return v1::TOKENIZER_KIND_WORD;
  return v1::TOKENIZER_KIND_UNSPECIFIED;
}

void FillModelConfig(const model::ModelConfig& config, v1::ModelConfig* c) {
  c->set_model_type(config.model_type);
  c->set_n_layer(static_cast<int32_t>(config.num_hidden_layers));
  c->set_n_embd(static_cast<int32_t>(config.hidden_size));
  c->set_n_head(static_cast<int32_t>(config.num_attention_heads));
  c->set_num_key_value_heads(static_cast<int32_t>(config.num_key_value_heads));
  c->set_head_dim(static_cast<int32_t>(config.head_dim));
  c->set_intermediate_size(static_cast<int32_t>(config.intermediate_size));
  c->set_n_positions(static_cast<int32_t>(config.max_position_embeddings));
  c->set_vocab_size(static_cast<int32_t>(config.vocab_size));
  c->set_layer_norm_epsilon(config.norm_eps);
  c->set_resid_pdrop(static_cast<float>(config.resid_pdrop));
  c->set_embd_pdrop(static_cast<float>(config.embd_pdrop));
  c->set_attn_pdrop(static_cast<float>(config.attn_pdrop));
  c->clear_eos_token_ids();
  for (int64_t id : config.eos_token_ids) c->add_eos_token_ids(static_cast<int32_t>(id));
}

void FillModelInfo(const ModelStore& store, v1::ModelRole role, v1::ModelInfo* info) {
  const std::shared_ptr<const ServedModel> served = store.Current();
  FillModelId(*served, info->mutable_model_id());
  const model::ModelConfig& config = store.config();
  FillModelConfig(config, info->mutable_config());
  info->set_parameter_count(served->model->NumParameters());
  info->set_device(store.device());
  info->set_dtype(v1::DTYPE_F32);
  v1::TokenizerInfo* t = info->mutable_tokenizer();
  t->set_eos_token_id(-1);
  t->set_pad_token_id(-1);
  t->set_bos_token_id(-1);
  if (const tokenizer::Tokenizer* tok = store.tokenizer(); tok != nullptr) {
    t->set_kind(ToTokenizerKind(tok->Kind()));
    t->set_vocab_size(tok->VocabSize());
    if (tok->EosId()) t->set_eos_token_id(*tok->EosId());
    if (tok->PadId()) t->set_pad_token_id(*tok->PadId());
    if (tok->BosId()) t->set_bos_token_id(*tok->BosId());
    const PromptCodec& codec = store.prompt_codec();
    t->set_chat_template(codec.chat_template != nullptr);
    t->set_end_of_turn_token_id(codec.end_of_turn_id ? static_cast<int32_t>(*codec.end_of_turn_id) : -1);
  } else {
    t->set_end_of_turn_token_id(-1);
    t->set_kind(v1::TOKENIZER_KIND_UNSPECIFIED);
    t->set_vocab_size(static_cast<int32_t>(config.vocab_size));
  }
  *info->mutable_loaded_at() =
      google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(served->loaded_at));
  info->set_source_path(runtime::Utf8Safe(served->source));
  info->set_role(role);
  for (const auto& [key, value] : served->metadata) {
    (*info->mutable_metadata()->mutable_fields())[key].set_string_value(value);
  }
}

}  // namespace rlhf::serving
