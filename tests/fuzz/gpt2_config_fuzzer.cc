// Input: the text of a model's config.json (common/model/gpt2_config.h). FromJson must accept it or refuse it with
// InvalidArgument; an accepted config validates, and what ToJson writes reads back to the same config.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/model/gpt2_config.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using rlhf::fuzz::Expect;
using rlhf::fuzz::ExpectOkOr;
using rlhf::fuzz::Fail;
using rlhf::model::Gpt2Config;

bool SameArchitecture(const Gpt2Config& a, const Gpt2Config& b) {
  return a.n_layer == b.n_layer && a.n_embd == b.n_embd && a.n_head == b.n_head && a.n_positions == b.n_positions &&
         a.vocab_size == b.vocab_size && a.n_inner == b.n_inner && a.layer_norm_epsilon == b.layer_norm_epsilon &&
         a.resid_pdrop == b.resid_pdrop && a.embd_pdrop == b.embd_pdrop && a.attn_pdrop == b.attn_pdrop &&
         a.activation_function == b.activation_function &&
         a.scale_attn_by_inverse_layer_idx == b.scale_attn_by_inverse_layer_idx && a.num_labels == b.num_labels &&
         a.pad_token_id == b.pad_token_id && a.bos_token_id == b.bos_token_id && a.eos_token_id == b.eos_token_id &&
         a.architectures == b.architectures;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = Gpt2Config::FromJson(text, "fuzz/config.json");
  if (!config.ok()) {
    ExpectOkOr(config.status(), "Gpt2Config::FromJson", {absl::StatusCode::kInvalidArgument});
    return 0;
  }
  ExpectOkOr(config->Validate(), "Validate of an accepted config", {});
  const std::string written = config->ToJson();
  auto again = Gpt2Config::FromJson(written, "fuzz/written config.json");
  if (!again.ok()) Fail("FromJson(ToJson(config)) of an accepted config", again.status());
  Expect(SameArchitecture(*config, *again), "FromJson(ToJson(config)) differs from config");
  Expect(again->ToJson() == written, "ToJson is not stable across a round trip");
  return 0;
}
