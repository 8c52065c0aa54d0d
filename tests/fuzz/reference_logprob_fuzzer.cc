// Input: a LogProbsRequest (binary), through what the LogProbs handler runs (the conversion in
// services/reference_logprob/reference_logprob_service_impl.h, then the engine's Submit, which validates and
// computes) on a tiny model. The answer is OK or INVALID_ARGUMENT; an OK answer has one finite, non-positive
// log-prob per response token of each sequence.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "services/reference_logprob/reference_engine.h"
#include "services/reference_logprob/reference_logprob_service_impl.h"
#include "tests/fuzz/model_service_fixture.h"

namespace {

using rlhf::fuzz::Expect;
using rlhf::fuzz::ExpectOkOr;
using rlhf::fuzz::Fail;
using rlhf::reference::LogProbsResult;
using rlhf::reference::ReferenceEngine;

ReferenceEngine& Engine() {
  static ReferenceEngine* engine = [] {
    rlhf::reference::ReferenceEngineOptions options;
    options.model.model_dir = rlhf::fuzz::TinyModelDir();
    options.queue.max_wait = absl::ZeroDuration();
    options.max_sequences = 8;
    auto created = ReferenceEngine::Create(options);
    if (!created.ok()) Fail("ReferenceEngine::Create on the tiny model", created.status());
    return created->release();
  }();
  return *engine;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Engine();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rlhf::v1::LogProbsRequest proto;
  if (!proto.ParseFromArray(data, static_cast<int>(size))) return 0;
  rlhf::reference::LogProbsRequest request = rlhf::reference::LogProbsRequestFromProto(proto);
  auto result = rlhf::fuzz::Await<LogProbsResult>(
      [&](ReferenceEngine::Callback done) { Engine().Submit(std::move(request), std::move(done)); });
  if (!result.ok()) {
    ExpectOkOr(result.status(), "LogProbs", {absl::StatusCode::kInvalidArgument});
    return 0;
  }
  Expect(static_cast<int>(result->logprobs.size()) == proto.sequences_size(), "one result per sequence");
  for (int i = 0; i < proto.sequences_size(); ++i) {
    Expect(static_cast<int>(result->logprobs[i].size()) == proto.sequences(i).response_token_ids_size(),
           "one log-prob per response token");
    for (float lp : result->logprobs[i]) Expect(std::isfinite(lp) && lp <= 0, "a log-prob that is not finite and <= 0");
  }
  return 0;
}
