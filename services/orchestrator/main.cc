// rlhf-orchestrator: drives runs of the SFT -> reward model -> PPO loop against the other services, keeps each run
// in a directory, and resumes unfinished runs when it starts.
#include <memory>

#include "absl/flags/flag.h"
#include "absl/strings/str_split.h"
#include "common/runtime/auth.h"
#include "common/runtime/server_main.h"
#include "services/orchestrator/orchestrator_service_impl.h"
#include "services/orchestrator/run_manager.h"

ABSL_FLAG(std::string, runs_root, "runs", "Directory holding one directory per run");
ABSL_FLAG(std::string, path_roots, "",
          "Comma-separated folders whose files a run config may name (task data, a labeler's dataset, a base "
          "model); a path outside them, symlinks resolved, is refused with PERMISSION_DENIED. Empty: --runs_root");
ABSL_FLAG(int, max_active_runs, 4, "Runs that may be active at once");
ABSL_FLAG(int, checkpoint_every, 5, "PPO iterations between trainer checkpoints (what a crash may cost)");
ABSL_FLAG(bool, resume, true, "Resume unfinished runs found under --runs_root at start-up");
ABSL_FLAG(std::string, services_auth_token_file, "", "Bearer token file for calls to the other services");
ABSL_FLAG(std::string, services_tls_ca_file, "", "PEM CA bundle to verify the other services (enables TLS)");
ABSL_FLAG(std::string, services_lb_policy, "round_robin",
          "gRPC load-balancing policy of the channels to the other services: round_robin spreads calls over every "
          "replica a dns:/// address resolves to; pick_first keeps to one. Weight updates always reach every replica");

int main(int argc, char** argv) {
  static std::unique_ptr<rlhf::orchestrator::RunManager> manager;
  rlhf::runtime::ServiceBinary binary;
  binary.name = "orchestrator";
  binary.description =
      "Drives runs of the SFT -> reward model -> PPO loop against the other services; resumes unfinished runs.";
  binary.default_port = 50050;
  binary.default_metrics_port = 9460;
  binary.create =
      [](const rlhf::runtime::ServiceContext& context) -> absl::StatusOr<std::vector<rlhf::runtime::OwnedService>> {
    rlhf::orchestrator::RunManagerOptions options;
    options.runs_root = absl::GetFlag(FLAGS_runs_root);
    for (absl::string_view root : absl::StrSplit(absl::GetFlag(FLAGS_path_roots), ',', absl::SkipWhitespace())) {
      options.path_roots.emplace_back(root);
    }
    options.max_active_runs = absl::GetFlag(FLAGS_max_active_runs);
    options.checkpoint_every = absl::GetFlag(FLAGS_checkpoint_every);
    options.resume = absl::GetFlag(FLAGS_resume);
    options.registry = context.registry;
    options.client.tls_ca_file = absl::GetFlag(FLAGS_services_tls_ca_file);
    options.client.load_balancing_policy = absl::GetFlag(FLAGS_services_lb_policy);
    if (const std::string token_file = absl::GetFlag(FLAGS_services_auth_token_file); !token_file.empty()) {
      auto token = rlhf::runtime::ReadBearerTokenFile("--services_auth_token_file", token_file);
      if (!token.ok()) return token.status();
      options.client.bearer_token = *std::move(token);
    }
    if (options.checkpoint_every < 1) return absl::InvalidArgumentError("--checkpoint_every must be >= 1");
    if (options.client.load_balancing_policy != "round_robin" &&
        options.client.load_balancing_policy != "pick_first") {
      return absl::InvalidArgumentError("--services_lb_policy must be round_robin or pick_first");
    }
    auto created = rlhf::orchestrator::RunManager::Create(options);
    if (!created.ok()) return created.status();
    manager = *std::move(created);
    std::vector<rlhf::runtime::OwnedService> services;
    services.push_back({rlhf::v1::OrchestratorService::service_full_name(),
                        std::make_unique<rlhf::orchestrator::OrchestratorServiceImpl>(manager.get())});
    return services;
  };
  binary.on_shutdown = [] {
    if (manager) manager->Shutdown();
  };
  return rlhf::runtime::ServerMain(argc, argv, binary);
}
