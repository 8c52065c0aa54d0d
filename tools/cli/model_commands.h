// `rlhf` subcommands that work on a model folder directly (no services): init-model, info, tokenize, generate,
// score. Each returns the process exit code and prints errors as "rlhf <command>: <message>".
#ifndef RLHF_TOOLS_CLI_MODEL_COMMANDS_H_
#define RLHF_TOOLS_CLI_MODEL_COMMANDS_H_

#include <string>

#include "absl/status/status.h"

namespace rlhf::cli {

struct InitModelOptions {
  std::string out_dir;
  std::string model_type = "gpt2";  // "gpt2", "llama", "qwen2", "qwen3", "mistral"
  int64_t n_layer = 2;
  int64_t n_embd = 128;              // hidden_size
  int64_t n_head = 4;
  int64_t num_key_value_heads = 0;   // Llama family: 0 means n_head
  int64_t head_dim = 0;              // Llama family: 0 means n_embd / n_head
  int64_t intermediate_size = 0;     // 0: the family's default for the width
  int64_t n_positions = 256;
  std::string tokenizer = "byte";  // "byte", "gpt2", or a folder with tokenizer files (its tokenizer and template)
  std::string gpt2_vocab_dir;      // encoder.json + vocab.bpe, for tokenizer "gpt2"
  uint64_t seed = 0;
  bool reward_head = false;  // a *ForSequenceClassification whose head is N(0, 0.02), as transformers starts one
};

// Writes a randomly initialised model of options.model_type with its tokenizer to options.out_dir (Hugging Face form).
absl::Status InitModel(const InitModelOptions& options);

int RunInitModel();
int RunInfo();
int RunTokenize();
int RunGenerate();
int RunScore();

}  // namespace rlhf::cli

#endif  // RLHF_TOOLS_CLI_MODEL_COMMANDS_H_
