// rlhf-reference-logprob: per-token log-probabilities of responses under the frozen SFT (reference) model.
#include <memory>

#include "absl/flags/flag.h"
#include "common/model/threads.h"
#include "common/runtime/server_main.h"
#include "services/reference_logprob/reference_engine.h"
#include "services/reference_logprob/reference_logprob_service_impl.h"

ABSL_FLAG(std::string, model, "", "Model folder in Hugging Face GPT-2 form (config.json, model.safetensors)");
ABSL_FLAG(std::string, model_name, "", "Name reported in responses; empty means the model folder's name");
ABSL_FLAG(std::string, device, "cpu", "LibTorch device: cpu, cuda, cuda:1 ...");
ABSL_FLAG(int, intra_op_threads, 0, "LibTorch intra-op threads; 0 keeps LibTorch's default (one per core)");
ABSL_FLAG(int, max_batch_rows, 64, "Sequences the engine scores in one forward pass");
ABSL_FLAG(absl::Duration, max_batch_wait, absl::Milliseconds(5),
          "How long a request waits for others to join its batch");
ABSL_FLAG(int, max_queued_requests, 256, "Requests waiting at most; more get RESOURCE_EXHAUSTED");
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
    if (const int threads = absl::GetFlag(FLAGS_intra_op_threads); threads > 0) {
      if (absl::Status status = rlhf::model::SetIntraOpThreads(threads); !status.ok()) return status;
    }
    rlhf::reference::ReferenceEngineOptions options;
    options.model.model_dir = absl::GetFlag(FLAGS_model);
    options.model.model_name = absl::GetFlag(FLAGS_model_name);
    options.model.device = absl::GetFlag(FLAGS_device);
    options.queue.max_batch_rows = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_max_batch_rows)));
    options.queue.max_wait = absl::GetFlag(FLAGS_max_batch_wait);
    options.queue.max_queued = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_max_queued_requests)));
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
