#include "common/runtime/server_main.h"

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/runtime/logging.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, listen_address, "",
          "gRPC listen address host:port (port 0 picks a free port); empty means 0.0.0.0 and the service's default "
          "port");
ABSL_FLAG(std::string, metrics_address, "",
          "Prometheus /metrics listen address host:port; empty means 0.0.0.0 and the service's default metrics port; "
          "'none' disables the endpoint");
ABSL_FLAG(std::string, tls_cert_file, "", "PEM server certificate chain; with --tls_key_file enables TLS");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)");
ABSL_FLAG(std::string, auth_token_file, "",
          "Callers' bearer tokens, one a line: 'TOKEN NAME ROLE[,ROLE...]' (roles: client, labeler, producer, "
          "operator, admin; '#' comments); a file whose only line is a bare TOKEN gives it the identity 'default' "
          "with role admin. Callers send 'authorization: Bearer <token>'. Empty (and no --tls_client_roles_file): "
          "no authentication. grpc.health.v1 stays open either way");
ABSL_FLAG(std::string, tls_client_roles_file, "",
          "With mutual TLS: roles of client certificates, one a line: 'COMMON_NAME ROLE[,ROLE...]'; a caller "
          "without a bearer token is the identity its verified certificate's subject CN names");
ABSL_FLAG(int, max_request_bytes, 4 << 20,
          "Largest request of the methods that take small messages (all but weight updates, training data, "
          "rollouts and task batches), in bytes; larger requests fail with RESOURCE_EXHAUSTED before they are parsed");
ABSL_FLAG(int, max_message_bytes, 64 << 20,
          "Largest response, and largest request of the methods that take large messages, in bytes; larger "
          "requests fail with RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_concurrent_streams, 256, "Concurrent calls (HTTP/2 streams) one client connection may open");
ABSL_FLAG(std::string, log_level, "info", "Log level: trace, debug, info, warn, error, critical, off");
ABSL_FLAG(std::string, log_format, "text", "Log format: text (key=value) or json (one object a line)");
ABSL_FLAG(absl::Duration, drain_delay, absl::ZeroDuration(),
          "On SIGTERM, how long health reports NOT_SERVING before new calls are refused (e.g. 5s behind a load "
          "balancer)");
ABSL_FLAG(absl::Duration, shutdown_deadline, absl::Seconds(30),
          "On SIGTERM, after the drain delay, how long in-flight calls may run before they are cancelled; the "
          "process exits at most 2s after the drain delay and this deadline, abandoning what still runs");

namespace rlhf::runtime {
namespace {

// Beyond --drain_delay + --shutdown_deadline, how long the rest of the shutdown (hooks, stopping the server) may take.
constexpr absl::Duration kShutdownGrace = absl::Seconds(2);

// Ends the process if the shutdown has not finished by `deadline`: a handler that ignores cancellation, an engine
// mid-batch or a hook would otherwise keep it alive past what the operator asked for. Says what it was waiting for.
class ShutdownWatchdog {
 public:
  ShutdownWatchdog(absl::Time deadline, absl::Duration allowed, const Server* server)
      : deadline_(deadline), allowed_(allowed), server_(server), thread_([this] { Watch(); }) {}
  ~ShutdownWatchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  // What the shutdown is doing now; `server` is the server whose calls to report (null once it is being destroyed).
  void SetPhase(const char* phase, const Server* server) {
    std::lock_guard<std::mutex> lock(mu_);
    phase_ = phase;
    server_ = server;
  }

 private:
  void Watch() {
    std::unique_lock<std::mutex> lock(mu_);
    if (cv_.wait_until(lock, absl::ToChronoTime(deadline_), [&] { return done_; })) return;
    std::vector<std::string> calls = server_ != nullptr ? server_->InFlightCalls() : std::vector<std::string>{};
    constexpr size_t kListed = 10;
    const size_t in_flight = calls.size();
    if (calls.size() > kListed) {
      calls.resize(kListed);
      calls.push_back(absl::StrCat("and ", in_flight - kListed, " more"));
    }
    auto logger = Logger("runtime");
    logger->error(
        "shutdown did not finish within --drain_delay + --shutdown_deadline + {}s ({}s): still {}; {} call(s) in "
        "flight{}{}; exiting without waiting for them",
        absl::ToInt64Seconds(kShutdownGrace), absl::ToDoubleSeconds(allowed_), phase_, in_flight,
        calls.empty() ? "" : ": ", absl::StrJoin(calls, ", "));
    spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) { l->flush(); });
    std::fflush(nullptr);
    std::_Exit(1);
  }

  const absl::Time deadline_;
  const absl::Duration allowed_;
  const Server* server_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  const char* phase_ = "starting to shut down";
  std::thread thread_;  // last: starts after the other members exist
};

}  // namespace

void SetUpFlagUsage(const std::string& usage) {
  absl::FlagsUsageConfig config;
  // List the project's flags under --help; absl's own stay under --helpfull.
  config.contains_help_flags = [](absl::string_view filename) { return !absl::StrContains(filename, "absl/"); };
  config.contains_helpshort_flags = config.contains_help_flags;
  config.version_string = []() { return std::string("rlhf ") + RLHF_VERSION + "\n"; };
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(usage);
}

absl::StatusOr<ServerOptions> ServerOptionsFromFlags(const ServiceBinary& binary) {
  ServerOptions options;
  options.name = binary.name;
  options.listen_address = absl::GetFlag(FLAGS_listen_address);
  if (options.listen_address.empty()) options.listen_address = absl::StrCat("0.0.0.0:", binary.default_port);
  options.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  if (options.metrics_address.empty()) {
    options.metrics_address = absl::StrCat("0.0.0.0:", binary.default_metrics_port);
  } else if (options.metrics_address == "none") {
    options.metrics_address.clear();
  }
  options.security.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  options.security.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  options.security.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  const std::string token_file = absl::GetFlag(FLAGS_auth_token_file);
  const std::string roles_file = absl::GetFlag(FLAGS_tls_client_roles_file);
  if (!token_file.empty() || !roles_file.empty()) {
    auto authenticator = Authenticator::FromFiles(token_file, roles_file);
    if (!authenticator.ok()) return authenticator.status();
    options.security.authenticator = *std::move(authenticator);
  }
  options.max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  options.drain_delay = absl::GetFlag(FLAGS_drain_delay);
  options.shutdown_deadline = absl::GetFlag(FLAGS_shutdown_deadline);
  if (options.drain_delay < absl::ZeroDuration()) return absl::InvalidArgumentError("--drain_delay is negative");
  if (options.shutdown_deadline < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--shutdown_deadline is negative");
  }
  return options;
}

int ServerMain(int argc, char** argv, const ServiceBinary& binary) {
  // Before any thread starts, so every thread inherits the mask and only sigwait below sees SIGTERM/SIGINT.
  BlockTerminationSignals();
  SetUpFlagUsage(absl::StrCat(binary.description, "\n\nUsage: ", argv[0], " [flags]"));
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", argv[0], positional[1]);
    return 2;
  }
  LoggingOptions logging;
  logging.level = absl::GetFlag(FLAGS_log_level);
  absl::Status status = ParseLogFormat(absl::GetFlag(FLAGS_log_format), &logging.format);
  if (status.ok()) status = InitLogging(logging);
  if (!status.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(status.message()).c_str());
    return 2;
  }
  auto logger = Logger("runtime");
  auto options = ServerOptionsFromFlags(binary);
  if (!options.ok()) {
    logger->error("bad flags: {}", std::string(options.status().message()));
    return 2;
  }
  auto registry = std::make_shared<prometheus::Registry>();
  ServiceContext context{registry.get(), &*options};
  auto owned = binary.create(context);
  if (!owned.ok()) {
    logger->error("cannot start {}: {}", binary.name, owned.status().ToString());
    return 1;
  }
  std::vector<ServiceEntry> entries;
  for (auto& service : *owned) entries.push_back({service.full_name, service.service.get()});
  auto server = Server::Start(*options, entries, registry);
  if (!server.ok()) {
    logger->error("cannot start {}: {}", binary.name, server.status().ToString());
    return 1;
  }
  const int signal_number = WaitForTerminationSignal();
  logger->info("received signal={} service={}, shutting down", signal_number, binary.name);
  {
    const absl::Duration allowed = options->drain_delay + options->shutdown_deadline + kShutdownGrace;
    ShutdownWatchdog watchdog(absl::Now() + allowed, allowed, server->get());
    watchdog.SetPhase("running the service's before-drain hook", server->get());
    if (binary.before_drain) binary.before_drain();
    watchdog.SetPhase("draining calls", server->get());
    (*server)->Shutdown();
    watchdog.SetPhase("running the service's shutdown hook", server->get());
    if (binary.on_shutdown) binary.on_shutdown();
    watchdog.SetPhase("stopping the server", nullptr);
    server->reset();
  }
  return 0;
}

}  // namespace rlhf::runtime
