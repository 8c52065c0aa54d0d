// rlhf-orchestrator: Drives runs of the SFT -> reward model -> PPO loop and streams their progress.
#include "common/runtime/server_main.h"
#include "services/orchestrator/orchestrator_service_impl.h"

int main(int argc, char** argv) {
  rlhf::runtime::ServiceBinary binary;
  binary.name = "orchestrator";
  binary.description =
      "rlhf-orchestrator: Drives runs of the SFT -> reward model -> PPO loop and streams their progress.";
  binary.default_port = 50050;
  binary.default_metrics_port = 9460;
  binary.create = [](const rlhf::runtime::ServiceContext&) -> absl::StatusOr<std::vector<rlhf::runtime::OwnedService>> {
    std::vector<rlhf::runtime::OwnedService> services;
    services.push_back({rlhf::v1::OrchestratorService::service_full_name(),
                        std::make_unique<rlhf::orchestrator::OrchestratorServiceImpl>()});
    return services;
  };
  return rlhf::runtime::ServerMain(argc, argv, binary);
}
