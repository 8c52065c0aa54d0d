// rlhf-labeling: Queues comparison tasks for human labelers and collects their rankings.
#include "common/runtime/server_main.h"
#include "services/labeling/labeling_service_impl.h"

int main(int argc, char** argv) {
  rlhf::runtime::ServiceBinary binary;
  binary.name = "labeling";
  binary.description = "Queues comparison tasks for human labelers and collects their rankings.";
  binary.default_port = 50055;
  binary.default_metrics_port = 9465;
  binary.create = [](const rlhf::runtime::ServiceContext&) -> absl::StatusOr<std::vector<rlhf::runtime::OwnedService>> {
    std::vector<rlhf::runtime::OwnedService> services;
    services.push_back(
        {rlhf::v1::LabelingService::service_full_name(), std::make_unique<rlhf::labeling::LabelingServiceImpl>()});
    return services;
  };
  return rlhf::runtime::ServerMain(argc, argv, binary);
}
