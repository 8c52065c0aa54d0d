// rlhf-labeling: Queues comparison tasks for human labelers and collects their rankings.
#include <memory>

#include "absl/flags/flag.h"
#include "common/runtime/logging.h"
#include "common/runtime/server_main.h"
#include "services/labeling/labeling_service_impl.h"

ABSL_FLAG(std::string, state_dir, "",
          "Directory for the queue's journal (batches, assignments, rankings; fsynced before a ranking is "
          "acknowledged). Empty: kept in memory only, lost on restart");
ABSL_FLAG(absl::Duration, task_timeout, absl::Minutes(10),
          "Time a labeler has to answer an assigned task, for batches that do not set one");
ABSL_FLAG(absl::Duration, max_next_task_wait, absl::Seconds(60), "Longest a NextTask call waits for a task");

int main(int argc, char** argv) {
  static rlhf::labeling::LabelingServiceImpl* service = nullptr;
  rlhf::runtime::ServiceBinary binary;
  binary.name = "labeling";
  binary.description = "Queues comparison tasks for human labelers and collects their rankings.";
  binary.default_port = 50055;
  binary.default_metrics_port = 9465;
  binary.create =
      [](const rlhf::runtime::ServiceContext& context) -> absl::StatusOr<std::vector<rlhf::runtime::OwnedService>> {
    rlhf::labeling::LabelingServiceOptions options;
    options.queue.state_dir = absl::GetFlag(FLAGS_state_dir);
    options.queue.default_task_timeout = absl::GetFlag(FLAGS_task_timeout);
    options.max_next_task_wait = absl::GetFlag(FLAGS_max_next_task_wait);
    // Labelers are who their token or certificate says (--auth_token_file), not what their requests claim.
    options.authenticator = context.options->security.authenticator;
    if (options.queue.default_task_timeout <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError("--task_timeout must be positive");
    }
    if (options.queue.state_dir.empty()) {
      rlhf::runtime::Logger("labeling")->warn("no --state_dir: the queue and its rankings are lost on restart");
    }
    auto created = rlhf::labeling::LabelingServiceImpl::Create(options, context.registry);
    if (!created.ok()) return created.status();
    service = created->get();
    std::vector<rlhf::runtime::OwnedService> services;
    services.push_back({rlhf::v1::LabelingService::service_full_name(), *std::move(created)});
    return services;
  };
  // Waiting NextTask calls end with UNAVAILABLE at once rather than hold up the drain.
  binary.before_drain = [] {
    if (service) service->Shutdown();
  };
  return rlhf::runtime::ServerMain(argc, argv, binary);
}
