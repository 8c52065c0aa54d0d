// Input: a ScoreRequest (binary), through what the Score handler runs (RewardRequestFromProto in
// services/reward_scoring/reward_scoring_service_impl.h, then the engine's Submit, which validates and scores) on a
// tiny reward model. The answer is OK or INVALID_ARGUMENT; an OK answer has one finite score per item.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "services/reward_scoring/reward_engine.h"
#include "services/reward_scoring/reward_scoring_service_impl.h"
#include "tests/fuzz/model_service_fixture.h"

namespace {

using rlhf::fuzz::Expect;
using rlhf::fuzz::ExpectOkOr;
using rlhf::fuzz::Fail;
using rlhf::reward::RewardEngine;
using rlhf::reward::RewardResult;

RewardEngine& Engine() {
  static RewardEngine* engine = [] {
    rlhf::reward::RewardEngineOptions options;
    options.model.model_dir = rlhf::fuzz::TinyModelDir(/*reward_head=*/true);
    options.queue.max_wait = absl::ZeroDuration();
    options.max_items = 8;
    auto created = RewardEngine::Create(options);
    if (!created.ok()) Fail("RewardEngine::Create on the tiny reward model", created.status());
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
  rlhf::v1::ScoreRequest proto;
  if (!proto.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto request = rlhf::reward::RewardRequestFromProto(proto, Engine());
  if (!request.ok()) {
    ExpectOkOr(request.status(), "Score's conversion",
               {absl::StatusCode::kInvalidArgument, absl::StatusCode::kFailedPrecondition});
    return 0;
  }
  auto result = rlhf::fuzz::Await<RewardResult>(
      [&](RewardEngine::Callback done) { Engine().Submit(*std::move(request), std::move(done)); });
  if (!result.ok()) {
    ExpectOkOr(result.status(), "Score", {absl::StatusCode::kInvalidArgument, absl::StatusCode::kFailedPrecondition});
    return 0;
  }
  Expect(static_cast<int>(result->scores.size()) == proto.items_size(), "one score per item");
  for (float score : result->scores) Expect(std::isfinite(score), "a score that is not finite");
  return 0;
}
