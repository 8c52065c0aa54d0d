// A service binary whose handler never finishes on its own, for shutdown tests: rlhf.v1.LabelingService whose
// NextTask prints "entered" on stdout and then neither answers nor reacts to cancellation. Runs through ServerMain
// like every service binary, so it takes the runtime flags (--listen_address, --shutdown_deadline, ...).
#include <cstdio>
#include <memory>

#include "common/runtime/server_main.h"
#include "rlhf/v1/labeling.grpc.pb.h"

namespace {

class StuckLabeling final : public rlhf::v1::LabelingService::CallbackService {
 public:
  grpc::ServerUnaryReactor* NextTask(grpc::CallbackServerContext* /*context*/,
                                     const rlhf::v1::NextTaskRequest* /*request*/,
                                     rlhf::v1::LabelingTask* /*response*/) override {
    class Reactor final : public grpc::ServerUnaryReactor {
     public:
      void OnCancel() override {}  // ignores cancellation: only the process ending ends this call
      void OnDone() override { delete this; }
    };
    std::printf("entered\n");
    std::fflush(stdout);
    return new Reactor();
  }
};

}  // namespace

int main(int argc, char** argv) {
  rlhf::runtime::ServiceBinary binary;
  binary.name = "stuck";
  binary.description = "A labeling service whose NextTask never finishes (for shutdown tests).";
  binary.create = [](const rlhf::runtime::ServiceContext&)
      -> absl::StatusOr<std::vector<rlhf::runtime::OwnedService>> {
    std::vector<rlhf::runtime::OwnedService> services;
    services.push_back({rlhf::v1::LabelingService::service_full_name(), std::make_unique<StuckLabeling>()});
    return services;
  };
  return rlhf::runtime::ServerMain(argc, argv, binary);
}
