// Input: a GenerationSession (fuzz_inputs.proto, binary): Generate requests and UpdateWeights streams played in
// order, each through what its handler runs (services/policy_generation/policy_generation_service_impl.h: the
// request conversion, then the engine's Submit, which validates and samples; the stream's assembly and the swap),
// on a tiny model with small limits. Each call ends with OK or an error code the API documents for it, and a
// successful Generate returns what it was asked for: one result per prompt, num_samples completions each, at most
// max_new_tokens tokens with one log-prob each.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/serving/weights_transfer.h"
#include "fuzz_inputs.pb.h"
#include "services/policy_generation/generation_engine.h"
#include "services/policy_generation/policy_generation_service_impl.h"
#include "tests/fuzz/model_service_fixture.h"

namespace {

using rlhf::fuzz::Expect;
using rlhf::fuzz::ExpectOkOr;
using rlhf::fuzz::Fail;
using rlhf::generation::GenerationEngine;
using rlhf::generation::GenerationResult;
using Code = absl::StatusCode;

constexpr int64_t kMaxWeightsBytes = 16 << 20;

std::unique_ptr<GenerationEngine> NewEngine() {
  rlhf::generation::GenerationEngineOptions options;
  options.model.model_dir = rlhf::fuzz::TinyModelDir();
  options.model.model_name = "policy";
  options.queue.max_wait = absl::ZeroDuration();
  options.max_prompts = 4;
  options.max_samples = 3;
  options.max_new_tokens = 8;
  options.max_prompt_tokens = 40;
  auto engine = GenerationEngine::Create(options);
  if (!engine.ok()) Fail("GenerationEngine::Create on the tiny model", engine.status());
  return *std::move(engine);
}

void Generate(GenerationEngine& engine, const rlhf::v1::GenerateRequest& proto) {
  auto request = rlhf::generation::GenerationRequestFromProto(proto, engine.store());
  if (!request.ok()) {
    ExpectOkOr(request.status(), "Generate's conversion", {Code::kInvalidArgument, Code::kFailedPrecondition});
    return;
  }
  const size_t prompts = request->prompts.size();
  const int64_t samples = request->num_samples;
  const int64_t max_new = request->max_new_tokens;
  auto result = rlhf::fuzz::Await<GenerationResult>(
      [&](GenerationEngine::Callback done) { engine.Submit(*std::move(request), std::move(done)); });
  if (!result.ok()) {
    ExpectOkOr(result.status(), "Generate", {Code::kInvalidArgument, Code::kFailedPrecondition});
    return;
  }
  Expect(result->samples.size() == prompts, "Generate returned a result count other than the prompts'");
  for (const auto& completions : result->samples) {
    Expect(static_cast<int64_t>(completions.size()) == samples, "Generate returned other than num_samples");
    for (const auto& sample : completions) {
      Expect(static_cast<int64_t>(sample.tokens.size()) <= max_new, "a completion longer than max_new_tokens");
      Expect(sample.logprobs.size() == sample.tokens.size(), "a completion without one log-prob per token");
    }
  }
}

void UpdateWeights(GenerationEngine& engine, const rlhf::fuzz::WeightsUpload& upload) {
  rlhf::fuzz::WeightsUpload stream = upload;
  // Fill in the digest the fuzzer cannot compute (see fuzz_inputs.proto).
  if (stream.chunks_size() > 0 && stream.chunks(0).has_header() && stream.chunks(0).header().sha256().empty()) {
    std::string payload;
    for (const auto& chunk : stream.chunks()) {
      if (chunk.has_data()) payload += chunk.data().data();
    }
    stream.mutable_chunks(0)->mutable_header()->set_sha256(rlhf::serving::Sha256(payload));
  }
  rlhf::serving::WeightsAssembler assembler(kMaxWeightsBytes);
  for (const auto& chunk : stream.chunks()) {
    if (absl::Status added = assembler.Add(chunk); !added.ok()) {
      ExpectOkOr(added, "UpdateWeights' stream", {Code::kInvalidArgument, Code::kResourceExhausted});
      return;
    }
  }
  const int64_t before = engine.store().Current()->version;
  auto swap = rlhf::generation::SwapFromWeightsStream(assembler, engine.store());
  if (!swap.ok()) {
    ExpectOkOr(swap.status(), "UpdateWeights",
               {Code::kInvalidArgument, Code::kDataLoss, Code::kFailedPrecondition, Code::kAborted});
    Expect(engine.store().Current()->version == before, "a refused update changed the served version");
    return;
  }
  Expect(engine.store().Current()->version > before, "an accepted update did not raise the version");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  rlhf::fuzz::TinyModelDir();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rlhf::fuzz::GenerationSession session;
  if (!session.ParseFromArray(data, static_cast<int>(size))) return 0;
  // Generate alone leaves the engine as it was: one engine serves such sessions. A weights update changes it, so a
  // session with one gets an engine of its own, to keep every input reproducible on its own.
  static GenerationEngine* shared = NewEngine().release();
  std::unique_ptr<GenerationEngine> own;
  for (const auto& call : session.calls()) {
    if (call.has_update_weights()) own = NewEngine();
    if (own != nullptr) break;
  }
  GenerationEngine& engine = own != nullptr ? *own : *shared;
  for (const auto& call : session.calls()) {
    if (call.has_generate()) Generate(engine, call.generate());
    if (call.has_update_weights()) UpdateWeights(engine, call.update_weights());
  }
  return 0;
}
