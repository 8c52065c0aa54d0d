// Where the tokenizer tests find their data, and scratch directories.
#ifndef RLHF_TESTS_COMMON_TOKENIZER_TEST_ENV_H_
#define RLHF_TESTS_COMMON_TOKENIZER_TEST_ENV_H_

#include <stdlib.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace rlhf::tokenizer::testing {

inline std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = ::getenv(name);
  return value != nullptr && *value != '\0' ? std::string(value) : fallback;
}

// The folder holding gpt2/encoder.json and gpt2/vocab.bpe, qwen3/ and llama3/.
inline std::string DataDir() { return EnvOr("RLHF_DATA_DIR", RLHF_TEST_DEFAULT_DATA_DIR); }

inline std::string Gpt2Dir() { return DataDir() + "/gpt2"; }

// Hugging Face tokenizer folders (tokenizer.json + tokenizer_config.json) that tools/setup.sh fetches.
inline std::string Qwen3Dir() { return DataDir() + "/qwen3"; }
inline std::string Llama3Dir() { return DataDir() + "/llama3"; }

// The shared reference fixtures (gpt2-bpe-cases.json, ...).
inline std::string FixturesDir() {
  return EnvOr("RLHF_FIXTURES_DIR", EnvOr("RLHF_SOURCE_DIR", RLHF_TEST_DEFAULT_SOURCE_DIR) + "/../shared/fixtures");
}

// A fresh empty directory under the test's temp dir.
inline std::string MakeTempDir() {
  std::string pattern = absl::StrCat(::testing::TempDir(), "/rlhf_tokenizer_XXXXXX");
  if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed for " << pattern;
  return pattern;
}

}  // namespace rlhf::tokenizer::testing

#endif  // RLHF_TESTS_COMMON_TOKENIZER_TEST_ENV_H_
