// Tiny GPT-2 models written to disk for tests: random weights, a byte-level tokenizer (258 ids).
#ifndef RLHF_TESTS_TESTING_TINY_MODEL_H_
#define RLHF_TESTS_TESTING_TINY_MODEL_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace rlhf::testing {

struct TinyModelOptions {
  int64_t n_layer = 2;
  int64_t n_embd = 32;
  int64_t n_head = 4;
  int64_t n_positions = 96;
  uint64_t seed = 1;
  bool reward_head = false;
  bool value_head = false;
  std::string model_type = "gpt2";  // any family: "gpt2", "llama", "qwen2", "qwen3", "mistral"
  // Empty: the byte tokenizer. Else a folder whose tokenizer files (and chat template) the model takes, with its
  // vocabulary and special tokens (e.g. RLHF_DATA_DIR/qwen3).
  std::string tokenizer_dir;
};

// Writes config.json, model.safetensors and tokenizer.json (byte tokenizer: ids 0..255 bytes, 256 EOS, 257 pad; or
// the files of options.tokenizer_dir) into `dir` (created if missing).
absl::Status WriteTinyModel(const std::string& dir, const TinyModelOptions& options = {});

}  // namespace rlhf::testing

#endif  // RLHF_TESTS_TESTING_TINY_MODEL_H_
