#include "tools/cli/local_services.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/runtime/client.h"

extern char** environ;

namespace rlhf::cli {

std::vector<LocalService> SuiteServices(const std::string& bin_dir, const SuiteLayout& layout) {
  auto make = [&](const std::string& name, const std::string& subdir, const std::string& grpc_service,
                  std::vector<std::string> args = {}) {
    LocalService service;
    service.name = name;
    service.binary = absl::StrCat(bin_dir, "/services/", subdir, "/rlhf-", name);
    service.grpc_service = grpc_service;
    service.args = std::move(args);
    return service;
  };
  const std::string model_flag = absl::StrCat("--model=", layout.policy_model);
  // The services may read the run's checkpoints and data under the runs root, and the files its config names.
  std::vector<std::string> roots = {layout.runs_root};
  roots.insert(roots.end(), layout.extra_roots.begin(), layout.extra_roots.end());
  const std::string roots_flag = absl::StrCat("--path_roots=", absl::StrJoin(roots, ","));
  return {
      make("policy-generation", "policy_generation", "rlhf.v1.PolicyGenerationService",
           {model_flag, "--model_name=policy", roots_flag}),
      make("reference-logprob", "reference_logprob", "rlhf.v1.ReferenceLogprobService",
           {model_flag, "--model_name=sft-reference", roots_flag}),
      make("reward-scoring", "reward_scoring", "rlhf.v1.RewardScoringService",
           {absl::StrCat("--model=", layout.reward_model), "--model_name=reward", "--allow_reload", roots_flag}),
      make("ppo-trainer", "ppo_trainer", "rlhf.v1.PpoTrainerService",
           {model_flag, absl::StrCat("--checkpoint_root=", layout.checkpoint_root), roots_flag}),
      make("labeling", "labeling", "rlhf.v1.LabelingService",
           layout.labeling_state_dir.empty() ? std::vector<std::string>{}
                                             : std::vector<std::string>{
                                                   absl::StrCat("--state_dir=", layout.labeling_state_dir)}),
      make("orchestrator", "orchestrator", "rlhf.v1.OrchestratorService",
           {absl::StrCat("--runs_root=", layout.runs_root), roots_flag,
            layout.resume_runs ? "--resume=true" : "--resume=false"}),
  };
}

namespace {

// Whether `port` on 127.0.0.1 can be bound now (0: any; returns the one the kernel chose).
absl::StatusOr<int> TryBind(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("cannot bind 127.0.0.1:", port, ": ", std::strerror(err)));
  }
  ::close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

// The first port of the kernel's ephemeral range (ip_local_port_range), from which it picks ports for bind(0) and
// for outgoing connections.
int FirstEphemeralPort() {
  int low = 32768, high = 60999;
  std::FILE* f = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
  if (f != nullptr) {
    if (std::fscanf(f, "%d %d", &low, &high) != 2) low = 32768;
    std::fclose(f);
  }
  return low;
}

}  // namespace

absl::StatusOr<int> PickFreePort() {
  // Below the ephemeral range when there is room: a service's port, free while it restarts, is then not handed by
  // the kernel to another process's bind(0) or outgoing connection in the meantime (gRPC servers bind with
  // SO_REUSEPORT, so a second server on the port would silently take half the calls).
  const int low = FirstEphemeralPort();
  constexpr int kFirst = 10000;
  if (low - kFirst >= 1000) {
    std::random_device random;
    std::uniform_int_distribution<int> pick(kFirst, low - 1);
    for (int attempt = 0; attempt < 64; ++attempt) {
      auto port = TryBind(pick(random));
      if (port.ok()) return port;
    }
  }
  auto port = TryBind(0);
  if (!port.ok()) return absl::InternalError(absl::StrCat("cannot pick a free port: ", port.status().message()));
  return port;
}

namespace {

absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const std::string& log_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  // Children start with default signal handling and an empty mask, whatever this process blocks.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t empty;
  sigemptyset(&empty);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return absl::FailedPreconditionError(absl::StrCat("cannot start ", argv[0], ": ", std::strerror(rc)));
  return pid;
}

}  // namespace

absl::Status StartLocalServices(std::vector<LocalService>& services, const std::string& log_dir,
                                absl::Duration timeout) {
  for (auto& service : services) {
    if (::access(service.binary.c_str(), X_OK) != 0) {
      StopLocalServices(services, absl::Seconds(10)).IgnoreError();
      return absl::NotFoundError(absl::StrCat(service.name, ": no executable at ", service.binary,
                                              " (build the project first: tools/test.sh or ninja -C build)"));
    }
    // A service restarted from its old entry keeps its address, as a real one behind a stable name would.
    for (int* p : {&service.port, &service.metrics_port}) {
      if (*p != 0) continue;
      auto port = PickFreePort();
      if (!port.ok()) return port.status();
      *p = *port;
    }
    service.log_path = absl::StrCat(log_dir, "/", service.name, ".log");
    std::vector<std::string> argv = {service.binary, absl::StrCat("--listen_address=127.0.0.1:", service.port),
                                     absl::StrCat("--metrics_address=127.0.0.1:", service.metrics_port)};
    argv.insert(argv.end(), service.args.begin(), service.args.end());
    auto pid = Spawn(argv, service.log_path);
    if (!pid.ok()) {
      StopLocalServices(services, absl::Seconds(10)).IgnoreError();
      return pid.status();
    }
    service.pid = *pid;
  }
  const absl::Time deadline = absl::Now() + timeout;
  for (auto& service : services) {
    runtime::ClientOptions client;
    client.target = absl::StrCat("127.0.0.1:", service.port);
    client.max_reconnect_backoff = absl::Milliseconds(100);
    while (true) {
      auto channel = runtime::MakeChannel(client);
      if (!channel.ok()) return channel.status();
      auto health = runtime::CheckHealth(**channel, service.grpc_service, absl::Seconds(1));
      if (health.ok() && *health == runtime::HealthState::kServing) break;
      int wait_status = 0;
      if (::waitpid(service.pid, &wait_status, WNOHANG) == service.pid) {
        service.pid = -1;
        StopLocalServices(services, absl::Seconds(10)).IgnoreError();
        return absl::UnavailableError(absl::StrCat(service.name, " exited during start-up; see ", service.log_path));
      }
      if (absl::Now() > deadline) {
        StopLocalServices(services, absl::Seconds(10)).IgnoreError();
        return absl::DeadlineExceededError(absl::StrCat(service.name, " did not report SERVING within ",
                                                        absl::FormatDuration(timeout), "; see ", service.log_path));
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
  }
  return absl::OkStatus();
}

absl::Status StopLocalServices(std::vector<LocalService>& services, absl::Duration timeout) {
  for (auto& service : services) {
    if (service.pid > 0) ::kill(service.pid, SIGTERM);
  }
  std::string failures;
  const absl::Time deadline = absl::Now() + timeout;
  for (auto& service : services) {
    if (service.pid <= 0) continue;
    int wait_status = 0;
    pid_t done = 0;
    while ((done = ::waitpid(service.pid, &wait_status, WNOHANG)) == 0 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(50));
    }
    if (done != service.pid) {
      ::kill(service.pid, SIGKILL);
      ::waitpid(service.pid, &wait_status, 0);
      absl::StrAppend(&failures, " ", service.name, " (killed after ", absl::FormatDuration(timeout), ")");
    } else if (!WIFEXITED(wait_status) || WEXITSTATUS(wait_status) != 0) {
      absl::StrAppend(&failures, " ", service.name, " (exit status ", wait_status, ")");
    }
    service.pid = -1;
  }
  if (!failures.empty()) return absl::InternalError(absl::StrCat("services did not stop cleanly:", failures));
  return absl::OkStatus();
}

}  // namespace rlhf::cli
