#include "common/runtime/server_main.h"

#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/runtime/logging.h"

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
          "File whose first line is the bearer token callers must send as 'authorization: Bearer <token>'; "
          "empty disables token auth (grpc.health.v1 stays open either way)");
ABSL_FLAG(int, max_message_bytes, 64 << 20,
          "Largest request or response message in bytes; larger requests fail with RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_concurrent_streams, 256, "Concurrent calls (HTTP/2 streams) one client connection may open");
ABSL_FLAG(std::string, log_level, "info", "Log level: trace, debug, info, warn, error, critical, off");
ABSL_FLAG(std::string, log_format, "text", "Log format: text (key=value) or json (one object a line)");
ABSL_FLAG(absl::Duration, drain_delay, absl::ZeroDuration(),
          "On SIGTERM, how long health reports NOT_SERVING before new calls are refused (e.g. 5s behind a load "
          "balancer)");
ABSL_FLAG(absl::Duration, shutdown_deadline, absl::Seconds(30),
          "On SIGTERM, after the drain delay, how long in-flight calls may run before they are cancelled");

namespace rlhf::runtime {

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
  if (!token_file.empty()) {
    auto token = ReadBearerTokenFile("--auth_token_file", token_file);
    if (!token.ok()) return token.status();
    options.security.bearer_token = *std::move(token);
  }
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
  if (binary.before_drain) binary.before_drain();
  (*server)->Shutdown();
  if (binary.on_shutdown) binary.on_shutdown();
  server->reset();
  return 0;
}

}  // namespace rlhf::runtime
