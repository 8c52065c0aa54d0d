// Shared helpers of the model tests: where the fixtures are, scratch directories, tensor comparisons.
#ifndef RLHF_TESTS_COMMON_MODEL_TEST_ENV_H_
#define RLHF_TESTS_COMMON_MODEL_TEST_ENV_H_

#include <stdlib.h>

#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/strings/str_cat.h"
#include "common/model/causal_lm.h"
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

// LoadModel(dir), failing the test (and returning null) when it fails.
inline std::unique_ptr<CausalLm> LoadOrDie(const std::string& dir, const ModelOptions& options = {}) {
  auto model = LoadModel(dir, options);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

// max |a - b| over positions where mask [batch, seq] is 1; a, b [batch, seq, ...].
inline float MaxMaskedError(const at::Tensor& a, const at::Tensor& b, const at::Tensor& mask) {
  at::Tensor m = mask.to(at::kBool);
  while (m.dim() < a.dim()) m = m.unsqueeze(-1);
  return ((a - b).abs() * m).max().item<float>();
}

}  // namespace rlhf::model::testing

#endif  // RLHF_TESTS_COMMON_MODEL_TEST_ENV_H_
