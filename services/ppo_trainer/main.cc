// rlhf-ppo-trainer: holds the policy, the value model and their optimiser states; runs SFT, reward-model training and
// PPO steps for the orchestrator, and streams the trained weights to the generation service.
#include <memory>

#include "absl/flags/flag.h"
#include "absl/strings/str_split.h"
#include "common/model/threads.h"
#include "common/runtime/auth.h"
#include "common/runtime/server_main.h"
#include "services/ppo_trainer/ppo_trainer_service_impl.h"

ABSL_FLAG(std::string, model, "",
          "Initial policy: a model folder (config.json, model.safetensors, tokenizer files). Empty: none until "
          "TrainSft with init_model_path or LoadCheckpoint");
ABSL_FLAG(std::string, checkpoint_root, "checkpoints", "Directory for checkpoints that requests do not place");
ABSL_FLAG(std::string, path_roots, "",
          "Comma-separated folders whose files requests may name (data files, checkpoints to load, folders to write "
          "to); a path outside them, symlinks resolved, is refused with PERMISSION_DENIED. Empty: --checkpoint_root");
ABSL_FLAG(std::string, device, "cpu", "LibTorch device: cpu, cuda, cuda:1 ...");
ABSL_FLAG(int, intra_op_threads, 0, "LibTorch intra-op threads; 0 keeps LibTorch's default (one per core)");
ABSL_FLAG(int, max_rollouts, 4096, "Rollouts per PpoStep at most");
ABSL_FLAG(double, sft_learning_rate, 1e-4, "SFT learning rate when a request leaves it at 0");
ABSL_FLAG(double, reward_learning_rate, 5e-5, "Reward-model learning rate when a request leaves it at 0");
ABSL_FLAG(double, ppo_policy_learning_rate, 1e-5, "PPO policy learning rate when a request leaves it at 0");
ABSL_FLAG(double, ppo_value_learning_rate, 5e-5, "PPO value-model learning rate when a request leaves it at 0");
ABSL_FLAG(std::string, reward_auth_token_file, "",
          "Bearer token file for calls to a reward service (SFT checkpoint selection by reward score)");

int main(int argc, char** argv) {
  static std::unique_ptr<rlhf::trainer::TrainerEngine> engine;
  static std::unique_ptr<rlhf::trainer::TrainerMetrics> metrics;
  static rlhf::trainer::PpoTrainerServiceImpl* service = nullptr;
  rlhf::runtime::ServiceBinary binary;
  binary.name = "ppo-trainer";
  binary.description =
      "Trains the policy, reward and value models: SFT, reward-model training and PPO steps.";
  binary.default_port = 50054;
  binary.default_metrics_port = 9464;
  binary.create =
      [](const rlhf::runtime::ServiceContext& context) -> absl::StatusOr<std::vector<rlhf::runtime::OwnedService>> {
    if (int threads = absl::GetFlag(FLAGS_intra_op_threads); threads > 0) {
      if (absl::Status s = rlhf::model::SetIntraOpThreads(threads); !s.ok()) return s;
    }
    rlhf::trainer::TrainerEngineOptions options;
    options.model_dir = absl::GetFlag(FLAGS_model);
    options.checkpoint_root = absl::GetFlag(FLAGS_checkpoint_root);
    for (absl::string_view root : absl::StrSplit(absl::GetFlag(FLAGS_path_roots), ',', absl::SkipWhitespace())) {
      options.path_roots.emplace_back(root);
    }
    options.device = absl::GetFlag(FLAGS_device);
    options.max_rollouts = absl::GetFlag(FLAGS_max_rollouts);
    auto created = rlhf::trainer::TrainerEngine::Create(options);
    if (!created.ok()) return created.status();
    engine = *std::move(created);
    metrics = std::make_unique<rlhf::trainer::TrainerMetrics>(*context.registry);
    rlhf::trainer::StageDefaults defaults;
    defaults.sft_learning_rate = absl::GetFlag(FLAGS_sft_learning_rate);
    defaults.reward_learning_rate = absl::GetFlag(FLAGS_reward_learning_rate);
    defaults.ppo_policy_learning_rate = absl::GetFlag(FLAGS_ppo_policy_learning_rate);
    defaults.ppo_value_learning_rate = absl::GetFlag(FLAGS_ppo_value_learning_rate);
    if (const std::string token_file = absl::GetFlag(FLAGS_reward_auth_token_file); !token_file.empty()) {
      auto token = rlhf::runtime::ReadBearerTokenFile("--reward_auth_token_file", token_file);
      if (!token.ok()) return token.status();
      defaults.reward_client.bearer_token = *std::move(token);
    }
    auto impl = std::make_unique<rlhf::trainer::PpoTrainerServiceImpl>(engine.get(), metrics.get(), defaults);
    service = impl.get();
    std::vector<rlhf::runtime::OwnedService> services;
    services.push_back({rlhf::v1::PpoTrainerService::service_full_name(), std::move(impl)});
    return services;
  };
  binary.on_shutdown = [] {
    if (service != nullptr) service->Shutdown();
  };
  return rlhf::runtime::ServerMain(argc, argv, binary);
}
