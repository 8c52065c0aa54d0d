#include "tests/testing/tiny_model.h"

#include "common/model/causal_lm.h"
#include "common/tokenizer/byte_tokenizer.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"

namespace rlhf::testing {

absl::Status WriteTinyModel(const std::string& dir, const TinyModelOptions& options) {
  RETURN_IF_ERROR(util::MakeDirectories(dir));
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
  if (options.tokenizer_dir.empty()) {
    ASSIGN_OR_RETURN(auto bytes, tokenizer::ByteTokenizer::Create());
    RETURN_IF_ERROR(bytes->Save(dir + "/tokenizer.json"));
    tokenizer = std::move(bytes);
  } else {
    ASSIGN_OR_RETURN(tokenizer, tokenizer::LoadTokenizer(options.tokenizer_dir));
    RETURN_IF_ERROR(tokenizer::CopyTokenizerFiles(options.tokenizer_dir, dir));
  }
  ASSIGN_OR_RETURN(model::ModelConfig config, model::ModelConfig::ForModelType(options.model_type));
  config.SetShape(options.n_layer, options.n_embd, options.n_head);
  config.max_position_embeddings = options.n_positions;
  config.vocab_size = tokenizer->VocabSize();
  config.eos_token_ids.clear();
  if (tokenizer->EosId()) config.eos_token_ids = {*tokenizer->EosId()};
  config.pad_token_id.reset();
  if (tokenizer->PadId()) config.pad_token_id = *tokenizer->PadId();
  if (options.reward_head) config.architectures = {config.SequenceClassifierArchitecture()};
  model::ModelOptions model_options;
  model_options.init_seed = options.seed;
  model_options.reward_head = options.reward_head;
  model_options.value_head = options.value_head;
  ASSIGN_OR_RETURN(auto model, model::CreateModel(config, model_options));
  return model->Save(dir);
}

}  // namespace rlhf::testing
