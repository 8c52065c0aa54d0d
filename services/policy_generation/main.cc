// rlhf-policy-generation: serves the current policy: batched, KV-cached sampling with atomic weight updates.
#include <memory>

#include "absl/flags/flag.h"
#include "common/model/threads.h"
#include "common/runtime/server_main.h"
#include "services/policy_generation/generation_engine.h"
#include "services/policy_generation/policy_generation_service_impl.h"

ABSL_FLAG(std::string, model, "",
          "Model folder in Hugging Face GPT-2 form (config.json, model.safetensors, tokenizer)");
ABSL_FLAG(std::string, model_name, "", "Name reported in responses; empty means the model folder's name");
ABSL_FLAG(std::string, device, "cpu", "LibTorch device: cpu, cuda, cuda:1 ...");
ABSL_FLAG(int, intra_op_threads, 0, "LibTorch intra-op threads; 0 keeps LibTorch's default (one per core)");
ABSL_FLAG(int, max_batch_rows, 16, "Rows (prompts x samples) the engine decodes together");
ABSL_FLAG(absl::Duration, max_batch_wait, absl::Milliseconds(5),
          "How long a request waits for others to join its batch");
ABSL_FLAG(int, max_queued_requests, 256, "Requests waiting at most; more get RESOURCE_EXHAUSTED");
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
    if (const int threads = absl::GetFlag(FLAGS_intra_op_threads); threads > 0) {
      if (absl::Status status = rlhf::model::SetIntraOpThreads(threads); !status.ok()) return status;
    }
    rlhf::generation::GenerationEngineOptions options;
    options.model.model_dir = absl::GetFlag(FLAGS_model);
    options.model.model_name = absl::GetFlag(FLAGS_model_name);
    options.model.device = absl::GetFlag(FLAGS_device);
    options.queue.max_batch_rows = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_max_batch_rows)));
    options.queue.max_wait = absl::GetFlag(FLAGS_max_batch_wait);
    options.queue.max_queued = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_max_queued_requests)));
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
