#include "services/reward_scoring/reward_scoring_service_impl.h"

#include "common/runtime/finished_reactors.h"

namespace rlhf::reward {
namespace {

constexpr char kCapability[] = "the reward-scoring service (reward model training and serving)";

}  // namespace

grpc::ServerUnaryReactor* RewardScoringServiceImpl::Score(grpc::CallbackServerContext* context,
                                                          const v1::ScoreRequest* /*request*/,
                                                          v1::ScoreResponse* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("Score", kCapability));
}

grpc::ServerBidiReactor<v1::ScoreRequest, v1::ScoreResponse>* RewardScoringServiceImpl::ScoreStream(
    grpc::CallbackServerContext* /*context*/) {
  return runtime::FinishBidi<v1::ScoreRequest, v1::ScoreResponse>(runtime::NotBuiltYet("ScoreStream", kCapability));
}

grpc::ServerUnaryReactor* RewardScoringServiceImpl::GetModelInfo(grpc::CallbackServerContext* context,
                                                                 const v1::GetModelInfoRequest* /*request*/,
                                                                 v1::ModelInfo* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("GetModelInfo", kCapability));
}

grpc::ServerUnaryReactor* RewardScoringServiceImpl::ReloadModel(grpc::CallbackServerContext* context,
                                                                const v1::ReloadModelRequest* /*request*/,
                                                                v1::ReloadModelResponse* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("ReloadModel", kCapability));
}

}  // namespace rlhf::reward
