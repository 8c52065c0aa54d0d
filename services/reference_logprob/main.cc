// rlhf-reference-logprob: Serves per-token log-probabilities of responses under the frozen SFT (reference) model.
#include "common/runtime/server_main.h"
#include "services/reference_logprob/reference_logprob_service_impl.h"

int main(int argc, char** argv) {
  rlhf::runtime::ServiceBinary binary;
  binary.name = "reference-logprob";
  binary.description =
      "rlhf-reference-logprob: Serves per-token log-probabilities of responses under the frozen SFT (reference) model.";
  binary.default_port = 50052;
  binary.default_metrics_port = 9462;
  binary.create = [](const rlhf::runtime::ServiceContext&) -> absl::StatusOr<std::vector<rlhf::runtime::OwnedService>> {
    std::vector<rlhf::runtime::OwnedService> services;
    services.push_back({rlhf::v1::ReferenceLogprobService::service_full_name(),
                        std::make_unique<rlhf::reference::ReferenceLogprobServiceImpl>()});
    return services;
  };
  return rlhf::runtime::ServerMain(argc, argv, binary);
}
