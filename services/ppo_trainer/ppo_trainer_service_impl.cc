#include "services/ppo_trainer/ppo_trainer_service_impl.h"

#include "common/runtime/finished_reactors.h"

namespace rlhf::trainer {
namespace {

constexpr char kCapability[] = "the trainer service (SFT, reward-model training, PPO with InstructGPT's objective)";

}  // namespace

grpc::ServerWriteReactor<v1::TrainingEvent>* PpoTrainerServiceImpl::TrainSft(grpc::CallbackServerContext* /*context*/,
                                                                             const v1::TrainSftRequest* /*request*/) {
  return runtime::FinishWriter<v1::TrainingEvent>(runtime::NotBuiltYet("TrainSft", kCapability));
}

grpc::ServerWriteReactor<v1::TrainingEvent>* PpoTrainerServiceImpl::TrainRewardModel(
    grpc::CallbackServerContext* /*context*/, const v1::TrainRewardModelRequest* /*request*/) {
  return runtime::FinishWriter<v1::TrainingEvent>(runtime::NotBuiltYet("TrainRewardModel", kCapability));
}

grpc::ServerUnaryReactor* PpoTrainerServiceImpl::PpoStep(grpc::CallbackServerContext* context,
                                                         const v1::PpoStepRequest* /*request*/,
                                                         v1::PpoStepResponse* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("PpoStep", kCapability));
}

grpc::ServerWriteReactor<v1::WeightsChunk>* PpoTrainerServiceImpl::ExportWeights(
    grpc::CallbackServerContext* /*context*/, const v1::ExportWeightsRequest* /*request*/) {
  return runtime::FinishWriter<v1::WeightsChunk>(runtime::NotBuiltYet("ExportWeights", kCapability));
}

grpc::ServerUnaryReactor* PpoTrainerServiceImpl::SaveCheckpoint(grpc::CallbackServerContext* context,
                                                                const v1::SaveCheckpointRequest* /*request*/,
                                                                v1::SaveCheckpointResponse* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("SaveCheckpoint", kCapability));
}

grpc::ServerUnaryReactor* PpoTrainerServiceImpl::LoadCheckpoint(grpc::CallbackServerContext* context,
                                                                const v1::LoadCheckpointRequest* /*request*/,
                                                                v1::LoadCheckpointResponse* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("LoadCheckpoint", kCapability));
}

grpc::ServerUnaryReactor* PpoTrainerServiceImpl::GetModelInfo(grpc::CallbackServerContext* context,
                                                              const v1::GetModelInfoRequest* /*request*/,
                                                              v1::ModelInfo* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("GetModelInfo", kCapability));
}

}  // namespace rlhf::trainer
