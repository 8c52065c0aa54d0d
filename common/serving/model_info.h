// ModelInfo (rlhf.v1) of a served model: the one conversion all model services share.
#ifndef RLHF_COMMON_SERVING_MODEL_INFO_H_
#define RLHF_COMMON_SERVING_MODEL_INFO_H_

#include "common/serving/model_store.h"
#include "rlhf/v1/common.pb.h"

namespace rlhf::serving {

// Fills `info` from the store's current model: id, config, parameter count, device, dtype, tokenizer, load time,
// source, role and provenance metadata.
void FillModelInfo(const ModelStore& store, v1::ModelRole role, v1::ModelInfo* info);

// The config as rlhf.v1.ModelConfig: family, shape and dropout (the one conversion every service uses).
void FillModelConfig(const model::ModelConfig& config, v1::ModelConfig* out);

// The proto kind of a tokenizer::Tokenizer::Kind() ("gpt2-bpe", "hf-bpe", "byte", "word"; UNSPECIFIED otherwise).
v1::TokenizerKind ToTokenizerKind(const std::string& kind);

// ModelId{name, version} of a served model.
void FillModelId(const ServedModel& served, v1::ModelId* id);

}  // namespace rlhf::serving

#endif  // RLHF_COMMON_SERVING_MODEL_INFO_H_
