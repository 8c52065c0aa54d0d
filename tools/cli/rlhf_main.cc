// rlhf: the suite's command-line tool.
//   rlhf run      start the services on loopback and run the main job (see --help)
//   rlhf health   gRPC health probe for one service (exit 0 when SERVING), for scripts and container healthchecks
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/runtime/auth.h"
#include "common/runtime/client.h"
#include "common/runtime/logging.h"
#include "common/runtime/server.h"
#include "common/runtime/server_main.h"
#include "common/util/file_util.h"
#include "tools/cli/local_services.h"

ABSL_FLAG(std::string, bin_dir, "",
          "run: build folder holding services/<name>/rlhf-<name>; empty means the build this rlhf binary is in");
ABSL_FLAG(std::string, run_dir, "runs/local", "run: folder for the run's files and the services' logs");
ABSL_FLAG(absl::Duration, startup_timeout, absl::Seconds(60), "run: how long services may take to report SERVING");
ABSL_FLAG(std::string, target, "127.0.0.1:50051", "health: host:port of the server to probe");
ABSL_FLAG(std::string, service, "", "health: service name to ask about; empty asks about the whole server");
ABSL_FLAG(std::string, tls_ca_file, "", "health: PEM CA bundle; set to probe a TLS server");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(3), "health: deadline of the probe");

namespace rlhf::cli {
namespace {

constexpr char kUsage[] =
    "rlhf: command-line tool of the RLHF suite.\n\n"
    "Usage:\n"
    "  rlhf run [--run_dir=DIR]            start the six services on loopback, check their health, run the job\n"
    "  rlhf health --target=HOST:PORT [--service=NAME]\n"
    "                                      exit 0 when the server (or service) reports SERVING, 1 otherwise\n";

std::string DefaultBinDir() {
  char path[4096];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return "build";
  std::string exe(path, static_cast<size_t>(n));
  const std::string suffix = "/tools/cli/rlhf";
  if (absl::EndsWith(exe, suffix)) return exe.substr(0, exe.size() - suffix.size());
  return exe.substr(0, exe.find_last_of('/'));
}

int RunHealth() {
  runtime::ClientOptions client;
  client.target = absl::GetFlag(FLAGS_target);
  client.tls_ca_file = absl::GetFlag(FLAGS_tls_ca_file);
  auto channel = runtime::MakeChannel(client);
  if (!channel.ok()) {
    std::fprintf(stderr, "rlhf health: %s\n", std::string(channel.status().message()).c_str());
    return 2;
  }
  const std::string service = absl::GetFlag(FLAGS_service);
  auto health = runtime::CheckHealth(**channel, service, absl::GetFlag(FLAGS_timeout));
  const std::string what = service.empty() ? client.target : absl::StrCat(client.target, " ", service);
  if (!health.ok()) {
    std::printf("%s: unreachable (%s)\n", what.c_str(), health.status().ToString().c_str());
    return 1;
  }
  switch (*health) {
    case runtime::HealthState::kServing:
      std::printf("%s: SERVING\n", what.c_str());
      return 0;
    case runtime::HealthState::kNotServing:
      std::printf("%s: NOT_SERVING\n", what.c_str());
      return 1;
    case runtime::HealthState::kUnknownService:
      std::printf("%s: unknown service\n", what.c_str());
      return 1;
  }
  return 1;
}

int RunMainJob() {
  std::string bin_dir = absl::GetFlag(FLAGS_bin_dir);
  if (bin_dir.empty()) bin_dir = DefaultBinDir();
  const std::string run_dir = absl::GetFlag(FLAGS_run_dir);
  const std::string log_dir = absl::StrCat(run_dir, "/logs");
  if (absl::Status status = util::MakeDirectories(log_dir); !status.ok()) {
    std::fprintf(stderr, "rlhf run: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  std::vector<LocalService> services = SuiteServices(bin_dir);
  std::printf("Starting %zu services on loopback (logs in %s)...\n", services.size(), log_dir.c_str());
  if (absl::Status status = StartLocalServices(services, log_dir, absl::GetFlag(FLAGS_startup_timeout)); !status.ok()) {
    std::fprintf(stderr, "rlhf run: %s\n", status.ToString().c_str());
    return 1;
  }
  std::printf("\n%-20s %-34s %-17s %-17s %s\n", "service", "grpc service", "address", "metrics", "health");
  for (const auto& service : services) {
    std::printf("%-20s %-34s 127.0.0.1:%-7d 127.0.0.1:%-7d SERVING\n", service.name.c_str(),
                service.grpc_service.c_str(), service.port, service.metrics_port);
  }
  std::printf(
      "\nAll services answer health checks. The training pipeline (SFT -> reward model -> PPO) is not built yet:\n"
      "their training and inference RPCs answer UNIMPLEMENTED, so no training runs. Stopping the services.\n");
  if (absl::Status status = StopLocalServices(services, absl::Seconds(40)); !status.ok()) {
    std::fprintf(stderr, "rlhf run: %s\n", status.ToString().c_str());
    return 1;
  }
  std::printf("All services drained and exited cleanly.\n");
  return 0;
}

}  // namespace
}  // namespace rlhf::cli

int main(int argc, char** argv) {
  rlhf::runtime::SetUpFlagUsage(rlhf::cli::kUsage);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    std::fprintf(stderr, "%s\nSee rlhf --help for the flags.\n", rlhf::cli::kUsage);
    return 2;
  }
  const std::string command = args[1];
  if (args.size() > 2) {
    std::fprintf(stderr, "rlhf %s: unexpected argument '%s'\n", command.c_str(), args[2]);
    return 2;
  }
  if (command == "health") return rlhf::cli::RunHealth();
  if (command == "run") return rlhf::cli::RunMainJob();
  std::fprintf(stderr, "rlhf: unknown command '%s'\n%s", command.c_str(), rlhf::cli::kUsage);
  return 2;
}
