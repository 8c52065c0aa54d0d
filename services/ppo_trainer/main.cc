// rlhf-ppo-trainer: Trains the policy, reward and value models: SFT, reward-model training and PPO steps.
#include "common/runtime/server_main.h"
#include "services/ppo_trainer/ppo_trainer_service_impl.h"

int main(int argc, char** argv) {
  rlhf::runtime::ServiceBinary binary;
  binary.name = "ppo-trainer";
  binary.description =
      "rlhf-ppo-trainer: Trains the policy, reward and value models: SFT, reward-model training and PPO steps.";
  binary.default_port = 50054;
  binary.default_metrics_port = 9464;
  binary.create = [](const rlhf::runtime::ServiceContext&) -> absl::StatusOr<std::vector<rlhf::runtime::OwnedService>> {
    std::vector<rlhf::runtime::OwnedService> services;
    services.push_back(
        {rlhf::v1::PpoTrainerService::service_full_name(), std::make_unique<rlhf::trainer::PpoTrainerServiceImpl>()});
    return services;
  };
  return rlhf::runtime::ServerMain(argc, argv, binary);
}
