// rlhf-reward-scoring: Serves a reward model: scores (prompt, response) pairs with dynamic batching and hot reload.
#include "common/runtime/server_main.h"
#include "services/reward_scoring/reward_scoring_service_impl.h"

int main(int argc, char** argv) {
  rlhf::runtime::ServiceBinary binary;
  binary.name = "reward-scoring";
  binary.description =
      "rlhf-reward-scoring: Serves a reward model: scores (prompt, response) pairs with dynamic batching and hot "
      "reload.";
  binary.default_port = 50053;
  binary.default_metrics_port = 9463;
  binary.create = [](const rlhf::runtime::ServiceContext&) -> absl::StatusOr<std::vector<rlhf::runtime::OwnedService>> {
    std::vector<rlhf::runtime::OwnedService> services;
    services.push_back({rlhf::v1::RewardScoringService::service_full_name(),
                        std::make_unique<rlhf::reward::RewardScoringServiceImpl>()});
    return services;
  };
  return rlhf::runtime::ServerMain(argc, argv, binary);
}
