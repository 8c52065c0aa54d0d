// Input: the text of a model's config.json (common/model/model_config.h), any family. FromJson must accept it or
// refuse it with InvalidArgument; an accepted config validates, and what ToJson writes reads back to the same config.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/model/model_config.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using rlhf::fuzz::Expect;
using rlhf::fuzz::ExpectOkOr;
using rlhf::fuzz::Fail;
using rlhf::model::ModelConfig;

// Architecture (CheckSameArchitecture) and everything else ToJson writes.
bool Same(const ModelConfig& a, const ModelConfig& b) {
  return rlhf::model::CheckSameArchitecture(a, b).ok() && a.resid_pdrop == b.resid_pdrop &&
         a.embd_pdrop == b.embd_pdrop && a.attn_pdrop == b.attn_pdrop && a.torch_dtype == b.torch_dtype &&
         a.num_labels == b.num_labels && a.pad_token_id == b.pad_token_id && a.bos_token_id == b.bos_token_id &&
         a.eos_token_ids == b.eos_token_ids && a.architectures == b.architectures;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = ModelConfig::FromJson(text, "fuzz/config.json");
  if (!config.ok()) {
    ExpectOkOr(config.status(), "ModelConfig::FromJson", {absl::StatusCode::kInvalidArgument});
    return 0;
  }
  ExpectOkOr(config->Validate(), "Validate of an accepted config", {});
  const std::string written = config->ToJson();
  auto again = ModelConfig::FromJson(written, "fuzz/written config.json");
  if (!again.ok()) Fail("FromJson(ToJson(config)) of an accepted config", again.status());
  Expect(Same(*config, *again), "FromJson(ToJson(config)) differs from config");
  Expect(again->ToJson() == written, "ToJson is not stable across a round trip");
  return 0;
}
