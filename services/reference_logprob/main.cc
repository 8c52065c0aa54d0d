// rlhf-reference-logprob: per-token log-probabilities of responses under the frozen SFT (reference) model.
#include <memory>

#include "absl/flags/flag.h"
#include "common/runtime/server_main.h"
#include "common/serving/model_service_flags.h"
#include "services/reference_logprob/reference_engine.h"
#include "services/reference_logprob/reference_logprob_service_impl.h"

ABSL_FLAG(int, max_sequences, 1024, "Sequences per request at most");

int main(int argc, char** argv) {
  static std::unique_ptr<rlhf::reference::ReferenceEngine> engine;
  static std::unique_ptr<rlhf::serving::EngineMetrics> metrics;
  rlhf::runtime::ServiceBinary binary;
  binary.name = "reference-logprob";
  binary.description = "Serves per-token log-probabilities of responses under the frozen SFT (reference) model.";
  binary.default_port = 50052;
  binary.default_metrics_port = 9462;
  binary.create =
      [](const rlhf::runtime::ServiceContext& context) -> absl::StatusOr<std::vector<rlhf::runtime::OwnedService>> {
    rlhf::reference::ReferenceEngineOptions options;
    auto shared = rlhf::serving::ModelServiceOptionsFromFlags(64);
    if (!shared.ok()) return shared.status();
    options.model = shared->model;
    options.queue = shared->queue;
    options.max_sequences = absl::GetFlag(FLAGS_max_sequences);
    auto created = rlhf::reference::ReferenceEngine::Create(options);
    if (!created.ok()) return created.status();
    engine = *std::move(created);
    metrics = std::make_unique<rlhf::serving::EngineMetrics>(*context.registry, "reference", "reference-logprob");
    std::vector<rlhf::runtime::OwnedService> services;
    services.push_back({rlhf::v1::ReferenceLogprobService::service_full_name(),
                        std::make_unique<rlhf::reference::ReferenceLogprobServiceImpl>(engine.get(), metrics.get())});
    return services;
  };
  binary.on_shutdown = [] {
    if (engine) engine->Shutdown();
  };
  return rlhf::runtime::ServerMain(argc, argv, binary);
}
