// Shared helpers of the model tests: where the fixtures are, scratch directories, tensor comparisons.
#ifndef RLHF_TESTS_COMMON_MODEL_TEST_ENV_H_
#define RLHF_TESTS_COMMON_MODEL_TEST_ENV_H_

#include <stdlib.h>

#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/strings/str_cat.h"
#include "common/model/safetensors.h"
#include "gtest/gtest.h"

namespace rlhf::model::testing {

inline std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = ::getenv(name);
  return value != nullptr && *value != '\0' ? std::string(value) : fallback;
}

// The shared reference fixtures: RLHF_FIXTURES_DIR, else RLHF_SOURCE_DIR/../shared/fixtures.
inline std::string FixturesDir() {
  return EnvOr("RLHF_FIXTURES_DIR", EnvOr("RLHF_SOURCE_DIR", RLHF_TEST_DEFAULT_SOURCE_DIR) + "/../shared/fixtures");
}
inline std::string TinyLmDir() { return FixturesDir() + "/gpt2-tiny-lm"; }
inline std::string TinyRmDir() { return FixturesDir() + "/gpt2-tiny-rm"; }

// A fresh empty directory under the test's temp dir.
inline std::string MakeTempDir() {
  std::string pattern = absl::StrCat(::testing::TempDir(), "/rlhf_model_XXXXXX");
  if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed for " << pattern;
  return pattern;
}

// Reads tensor `name` of `path`, failing the test when absent.
inline at::Tensor ReadTensor(const std::string& path, const std::string& name,
                             SafetensorsConversion conversion = SafetensorsConversion::kAsStored) {
  auto file = SafetensorsFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return at::Tensor();
  SafetensorsGetOptions options;
  options.conversion = conversion;
  auto t = (*file)->Get(name, options);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : at::Tensor();
}

}  // namespace rlhf::model::testing

#endif  // RLHF_TESTS_COMMON_MODEL_TEST_ENV_H_
