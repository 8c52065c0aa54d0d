// rlhf.v1.PpoTrainerService: converts protobuf at the edge, runs each operation of the TrainerEngine on the
// service's operation thread (never on a gRPC thread), streams progress, and records the trainer's metrics.
#ifndef RLHF_SERVICES_PPO_TRAINER_PPO_TRAINER_SERVICE_IMPL_H_
#define RLHF_SERVICES_PPO_TRAINER_PPO_TRAINER_SERVICE_IMPL_H_

#include <atomic>
#include <memory>
#include <string>

#include "common/runtime/client.h"
#include "common/runtime/worker_thread.h"
#include "rlhf/v1/trainer.grpc.pb.h"
#include "services/ppo_trainer/trainer_engine.h"
#include "services/ppo_trainer/trainer_metrics.h"

namespace rlhf::trainer {

namespace v1 = ::rlhf::v1;

// Default learning rates when a request leaves OptimizerConfig.learning_rate at 0.
struct StageDefaults {
  double sft_learning_rate = 1e-4;
  double reward_learning_rate = 5e-5;
  double ppo_policy_learning_rate = 1e-5;
  double ppo_value_learning_rate = 5e-5;
  int32_t sft_batch_size = 16;
  // How the trainer reaches a reward service for SFT's REWARD_SCORE selection.
  runtime::ClientOptions reward_client;
};

class PpoTrainerServiceImpl final : public v1::PpoTrainerService::CallbackService {
 public:
  PpoTrainerServiceImpl(TrainerEngine* engine, TrainerMetrics* metrics, StageDefaults defaults);
  ~PpoTrainerServiceImpl() override;

  // Stops running operations at their next step (they end with UNAVAILABLE) and refuses new ones.
  void Shutdown();

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

 private:
  TrainerEngine* engine_;
  TrainerMetrics* metrics_;
  StageDefaults defaults_;
  std::atomic<bool> shutting_down_{false};
  std::unique_ptr<runtime::WorkerThread> worker_;  // runs one operation at a time, off the gRPC threads
};

// Conversions, exposed for tests. InvalidArgument naming the request field.
absl::StatusOr<training::OptimizerOptions> ToOptimizerOptions(const v1::OptimizerConfig& config,
                                                              double default_learning_rate, const std::string& field);
absl::StatusOr<training::PpoOptions> ToPpoOptions(const v1::PpoHyperParams& hparams, const StageDefaults& defaults);

// The requests of TrainSft, TrainRewardModel and PpoStep as the engine's jobs, with every check the handlers run
// before they take the trainer (INVALID_ARGUMENT naming the field); the engine checks the data further when the job
// runs. Plain functions, so that the fuzz target (tests/fuzz/ppo_trainer_fuzzer.cc) runs what the handlers run.
absl::StatusOr<SftJob> SftJobFromProto(const v1::TrainSftRequest& request, const StageDefaults& defaults);
absl::StatusOr<RewardJob> RewardJobFromProto(const v1::TrainRewardModelRequest& request, const StageDefaults& defaults);
absl::StatusOr<PpoJob> PpoJobFromProto(const v1::PpoStepRequest& request, const StageDefaults& defaults);

}  // namespace rlhf::trainer

#endif  // RLHF_SERVICES_PPO_TRAINER_PPO_TRAINER_SERVICE_IMPL_H_
