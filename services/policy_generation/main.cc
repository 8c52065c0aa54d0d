// rlhf-policy-generation: serves the current policy: batched, KV-cached sampling with atomic weight updates.
#include <memory>

#include "absl/flags/flag.h"
#include "common/runtime/server_main.h"
#include "common/serving/model_service_flags.h"
#include "services/policy_generation/generation_engine.h"
#include "services/policy_generation/policy_generation_service_impl.h"

ABSL_FLAG(int, max_prompts, 256, "Prompts per request at most");
ABSL_FLAG(int, max_samples, 16, "Samples per prompt at most");
ABSL_FLAG(int, max_new_tokens, 1024, "max_new_tokens a request may ask for at most");
ABSL_FLAG(int64_t, max_weights_bytes, int64_t{8} << 30, "Largest UpdateWeights payload in bytes");

int main(int argc, char** argv) {
  static std::unique_ptr<rlhf::generation::GenerationEngine> engine;
  static std::unique_ptr<rlhf::serving::EngineMetrics> metrics;
  rlhf::runtime::ServiceBinary binary;
  binary.name = "policy-generation";
  binary.description = "Serves the current policy: batched, KV-cached sampling with atomic weight updates.";
  binary.default_port = 50051;
  binary.default_metrics_port = 9461;
  binary.create =
      [](const rlhf::runtime::ServiceContext& context) -> absl::StatusOr<std::vector<rlhf::runtime::OwnedService>> {
    rlhf::generation::GenerationEngineOptions options;
    auto shared = rlhf::serving::ModelServiceOptionsFromFlags(16);
    if (!shared.ok()) return shared.status();
    options.model = shared->model;
    options.queue = shared->queue;
    options.max_prompts = absl::GetFlag(FLAGS_max_prompts);
    options.max_samples = absl::GetFlag(FLAGS_max_samples);
    options.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
    auto created = rlhf::generation::GenerationEngine::Create(options);
    if (!created.ok()) return created.status();
    engine = *std::move(created);
    metrics = std::make_unique<rlhf::serving::EngineMetrics>(*context.registry, "generation", "policy-generation");
    std::vector<rlhf::runtime::OwnedService> services;
    services.push_back({rlhf::v1::PolicyGenerationService::service_full_name(),
                        std::make_unique<rlhf::generation::PolicyGenerationServiceImpl>(
                            engine.get(), metrics.get(), absl::GetFlag(FLAGS_max_weights_bytes))});
    return services;
  };
  binary.on_shutdown = [] {
    if (engine) engine->Shutdown();
  };
  return rlhf::runtime::ServerMain(argc, argv, binary);
}
