#include "tests/testing/tiny_model.h"

#include "common/model/gpt2.h"
#include "common/tokenizer/byte_tokenizer.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"

namespace rlhf::testing {

absl::Status WriteTinyModel(const std::string& dir, const TinyModelOptions& options) {
  RETURN_IF_ERROR(util::MakeDirectories(dir));
  ASSIGN_OR_RETURN(auto tokenizer, tokenizer::ByteTokenizer::Create());
  RETURN_IF_ERROR(tokenizer->Save(dir + "/tokenizer.json"));
  model::Gpt2Config config;
  config.n_layer = options.n_layer;
  config.n_embd = options.n_embd;
  config.n_head = options.n_head;
  config.n_positions = options.n_positions;
  config.vocab_size = tokenizer->VocabSize();
  config.eos_token_id = *tokenizer->EosId();
  config.pad_token_id = *tokenizer->PadId();
  if (options.reward_head) config.architectures = {model::kGpt2SequenceClassificationArchitecture};
  model::Gpt2Options model_options;
  model_options.init_seed = options.seed;
  model_options.reward_head = options.reward_head;
  model_options.value_head = options.value_head;
  ASSIGN_OR_RETURN(auto model, model::Gpt2Model::Create(config, model_options));
  return model->Save(dir);
}

}  // namespace rlhf::testing
