// rlhf-reward-scoring: serves a reward model: scores (prompt, response) pairs with dynamic batching and hot reload.
#include <malloc.h>

#include <memory>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "common/runtime/server_main.h"
#include "common/serving/model_service_flags.h"
#include "services/reward_scoring/reward_engine.h"
#include "services/reward_scoring/reward_scoring_service_impl.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_FLAG(std::string, watch, "",
          "Folder of reward-model checkpoints (one subfolder each, config.json + model.safetensors; names starting "
          "with '.' are ignored; created if missing): the newest is served and newer ones are swapped in as they "
          "appear. Also enables ReloadModel of the checkpoints in it");
ABSL_FLAG(absl::Duration, watch_interval, absl::Seconds(2), "How often --watch's folder is checked");
ABSL_FLAG(bool, allow_reload, false,
          "Enable ReloadModel with checkpoint folders under --path_roots (required with it); without it ReloadModel "
          "loads only from --watch's folder, and answers FAILED_PRECONDITION without --watch");
ABSL_FLAG(int, max_items, 1024, "(prompt, response) pairs per request at most");

int main(int argc, char** argv) {
  // LibTorch allocates every activation with malloc. With glibc's defaults the large ones are returned to the kernel
  // after each forward pass (unmapped, or trimmed off the heap) and fault in again on the next one: scoring the tiny
  // model at batch 32 ran about 2.5x slower that way (3x the page faults). Keep freed memory in the process instead.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest allowed value
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  static std::unique_ptr<rlhf::reward::RewardEngine> engine;
  static std::unique_ptr<rlhf::reward::RewardMetrics> metrics;
  rlhf::runtime::ServiceBinary binary;
  binary.name = "reward-scoring";
  binary.description =
      "Serves a reward model: scores (prompt, response) pairs with dynamic batching and hot reload. --model is "
      "optional with --watch (the newest checkpoint there is served).";
  binary.default_port = 50053;
  binary.default_metrics_port = 9463;
  binary.create =
      [](const rlhf::runtime::ServiceContext& context) -> absl::StatusOr<std::vector<rlhf::runtime::OwnedService>> {
    // The shared reader insists on --model, which this service may go without (the model can come from --watch or
    // ReloadModel): read the shared flags with a stand-in, then keep the real (possibly empty) value.
    const std::string model_dir = absl::GetFlag(FLAGS_model);
    if (model_dir.empty()) absl::SetFlag(&FLAGS_model, "unset");
    auto shared = rlhf::serving::ModelServiceOptionsFromFlags(32);
    absl::SetFlag(&FLAGS_model, model_dir);
    if (!shared.ok()) return shared.status();
    rlhf::reward::RewardEngineOptions options;
    options.model = shared->model;
    options.model.model_dir = model_dir;
    options.queue = shared->queue;
    options.max_items = absl::GetFlag(FLAGS_max_items);
    options.watch_dir = absl::GetFlag(FLAGS_watch);
    options.watch_interval = absl::GetFlag(FLAGS_watch_interval);
    options.allow_reload = absl::GetFlag(FLAGS_allow_reload);
    if (options.max_items < 1) return absl::InvalidArgumentError("--max_items must be at least 1");
    if (options.watch_interval <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError("--watch_interval must be positive");
    }
    auto created = rlhf::reward::RewardEngine::Create(options);
    if (!created.ok()) return created.status();
    engine = *std::move(created);
    metrics = std::make_unique<rlhf::reward::RewardMetrics>(*context.registry);
    std::vector<rlhf::runtime::OwnedService> services;
    services.push_back({rlhf::v1::RewardScoringService::service_full_name(),
                        std::make_unique<rlhf::reward::RewardScoringServiceImpl>(engine.get(), metrics.get())});
    return services;
  };
  binary.on_shutdown = [] {
    if (engine) engine->Shutdown();
  };
  return rlhf::runtime::ServerMain(argc, argv, binary);
}
