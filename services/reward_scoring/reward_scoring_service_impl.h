// rlhf.v1.RewardScoringService: validates requests, encodes text, converts protobuf <-> engine types, calls the
// engine, records metrics. The engine (reward_engine.h) owns the reward model, the batching and the reloads.
#ifndef RLHF_SERVICES_REWARD_SCORING_REWARD_SCORING_SERVICE_IMPL_H_
#define RLHF_SERVICES_REWARD_SCORING_REWARD_SCORING_SERVICE_IMPL_H_

#include "absl/status/statusor.h"
#include "common/serving/engine_metrics.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "rlhf/v1/reward.grpc.pb.h"
#include "services/reward_scoring/reward_engine.h"

namespace rlhf::reward {

namespace v1 = ::rlhf::v1;

// Metrics of the service, built once on the server's registry: the engine metrics
// (rlhf_reward_{rows_total,tokens_total,batch_rows,queue_depth,seconds_per_token},
// rlhf_model_version{service="reward-scoring"}, rlhf_weight_updates_total{service,outcome}) and
//   rlhf_reward_score   histogram: every score served (normalised, so SFT-like responses sit near 0)
struct RewardMetrics {
  explicit RewardMetrics(prometheus::Registry& registry);

  serving::EngineMetrics engine;
  prometheus::Histogram& score;
};

class RewardScoringServiceImpl final : public v1::RewardScoringService::CallbackService {
 public:
  // Longest ScoreRequest.request_id, in bytes.
  static constexpr size_t kMaxRequestIdBytes = 128;
  // ScoreStream requests one stream may have in flight (queued or computed, not yet written); beyond it the
  // stream stops reading until responses are written.
  static constexpr size_t kMaxStreamInFlight = 64;

  // `engine` and `metrics` must outlive the service.
  RewardScoringServiceImpl(RewardEngine* engine, RewardMetrics* metrics);

  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context, const v1::ScoreRequest* request,
                                  v1::ScoreResponse* response) override;
  grpc::ServerBidiReactor<v1::ScoreRequest, v1::ScoreResponse>* ScoreStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context, const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* ReloadModel(grpc::CallbackServerContext* context, const v1::ReloadModelRequest* request,
                                        v1::ReloadModelResponse* response) override;

 private:
  class ScoreStreamReactor;

  // Protobuf -> engine request: text prompts are encoded as the policy-generation service encodes prompts
  // (the tokenizer's ordinary encoding, special-token text not interpreted), text responses the same plus EOS.
  absl::StatusOr<RewardRequest> FromProto(const v1::ScoreRequest& proto, grpc::CallbackServerContext* context) const;
  // Fills scores, model id and bias, and records the scores.
  void FillResponse(const RewardResult& result, v1::ScoreResponse* response) const;

  RewardEngine* engine_;
  RewardMetrics* metrics_;
};

// Score's request as the engine takes it (which validates it further in Submit): the request id's length, the item
// count, each side as token ids (text encoded with the model's tokenizer; a text response gets the EOS id); the
// deadline and cancellation are left for the caller. UNAVAILABLE before a model is loaded, INVALID_ARGUMENT naming
// the field. A plain function, so that the fuzz target (tests/fuzz/reward_scoring_fuzzer.cc) runs what the handlers
// run.
absl::StatusOr<RewardRequest> RewardRequestFromProto(const v1::ScoreRequest& proto, const RewardEngine& engine);

}  // namespace rlhf::reward

#endif  // RLHF_SERVICES_REWARD_SCORING_REWARD_SCORING_SERVICE_IMPL_H_
