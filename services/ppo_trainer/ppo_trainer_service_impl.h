// rlhf.v1.PpoTrainerService: gRPC handlers. Until its engine lands, every method answers UNIMPLEMENTED naming
// the trainer service (SFT, reward-model training, PPO with InstructGPT's objective).
#ifndef RLHF_SERVICES_PPO_TRAINER_PPO_TRAINER_SERVICE_IMPL_H_
#define RLHF_SERVICES_PPO_TRAINER_PPO_TRAINER_SERVICE_IMPL_H_

#include "rlhf/v1/trainer.grpc.pb.h"

namespace rlhf::trainer {

namespace v1 = ::rlhf::v1;

class PpoTrainerServiceImpl final : public v1::PpoTrainerService::CallbackService {
 public:
  grpc::ServerWriteReactor<v1::TrainingEvent>* TrainSft(grpc::CallbackServerContext* context,
                                                        const v1::TrainSftRequest* request) override;
  grpc::ServerWriteReactor<v1::TrainingEvent>* TrainRewardModel(grpc::CallbackServerContext* context,
                                                                const v1::TrainRewardModelRequest* request) override;
  grpc::ServerUnaryReactor* PpoStep(grpc::CallbackServerContext* context, const v1::PpoStepRequest* request,
                                    v1::PpoStepResponse* response) override;
  grpc::ServerWriteReactor<v1::WeightsChunk>* ExportWeights(grpc::CallbackServerContext* context,
                                                            const v1::ExportWeightsRequest* request) override;
  grpc::ServerUnaryReactor* SaveCheckpoint(grpc::CallbackServerContext* context,
                                           const v1::SaveCheckpointRequest* request,
                                           v1::SaveCheckpointResponse* response) override;
  grpc::ServerUnaryReactor* LoadCheckpoint(grpc::CallbackServerContext* context,
                                           const v1::LoadCheckpointRequest* request,
                                           v1::LoadCheckpointResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context, const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
};

}  // namespace rlhf::trainer

#endif  // RLHF_SERVICES_PPO_TRAINER_PPO_TRAINER_SERVICE_IMPL_H_
