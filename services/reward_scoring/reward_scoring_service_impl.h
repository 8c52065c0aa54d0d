// rlhf.v1.RewardScoringService: gRPC handlers. Until its engine lands, every method answers UNIMPLEMENTED naming
// the reward-scoring service (reward model training and serving).
#ifndef RLHF_SERVICES_REWARD_SCORING_REWARD_SCORING_SERVICE_IMPL_H_
#define RLHF_SERVICES_REWARD_SCORING_REWARD_SCORING_SERVICE_IMPL_H_

#include "rlhf/v1/reward.grpc.pb.h"

namespace rlhf::reward {

namespace v1 = ::rlhf::v1;

class RewardScoringServiceImpl final : public v1::RewardScoringService::CallbackService {
 public:
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context, const v1::ScoreRequest* request,
                                  v1::ScoreResponse* response) override;
  grpc::ServerBidiReactor<v1::ScoreRequest, v1::ScoreResponse>* ScoreStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context, const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* ReloadModel(grpc::CallbackServerContext* context, const v1::ReloadModelRequest* request,
                                        v1::ReloadModelResponse* response) override;
};

}  // namespace rlhf::reward

#endif  // RLHF_SERVICES_REWARD_SCORING_REWARD_SCORING_SERVICE_IMPL_H_
