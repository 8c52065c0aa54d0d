// rlhf-policy-generation: Serves the current policy: batched, KV-cached sampling with hot weight updates.
#include "common/runtime/server_main.h"
#include "services/policy_generation/policy_generation_service_impl.h"

int main(int argc, char** argv) {
  rlhf::runtime::ServiceBinary binary;
  binary.name = "policy-generation";
  binary.description =
      "rlhf-policy-generation: Serves the current policy: batched, KV-cached sampling with hot weight updates.";
  binary.default_port = 50051;
  binary.default_metrics_port = 9461;
  binary.create = [](const rlhf::runtime::ServiceContext&) -> absl::StatusOr<std::vector<rlhf::runtime::OwnedService>> {
    std::vector<rlhf::runtime::OwnedService> services;
    services.push_back({rlhf::v1::PolicyGenerationService::service_full_name(),
                        std::make_unique<rlhf::generation::PolicyGenerationServiceImpl>()});
    return services;
  };
  return rlhf::runtime::ServerMain(argc, argv, binary);
}
