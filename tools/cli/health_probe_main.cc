// rlhf-health: a container health probe. Asks one server over grpc.health.v1 whether it (or one of its services) is
// SERVING. It links only the client side of the runtime (no LibTorch), so it starts in milliseconds: container
// engines run it every few seconds (docker-compose healthchecks, Kubernetes exec probes when TLS is on).
//
//   rlhf-health [--service=rlhf.v1.RewardScoringService] [--tls_ca_file=ca.pem] [--timeout=2s] HOST:PORT
//
// Exit codes: 0 SERVING; 1 NOT_SERVING, unknown service or unreachable; 2 bad usage.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/runtime/client.h"

ABSL_FLAG(std::string, service, "", "Service to ask about, e.g. rlhf.v1.RewardScoringService; empty: the server");
ABSL_FLAG(std::string, tls_ca_file, "", "PEM CA bundle that signed the server's certificate; set to probe over TLS");
ABSL_FLAG(std::string, tls_cert_file, "", "PEM client certificate, for servers that require mutual TLS");
ABSL_FLAG(std::string, tls_key_file, "", "PEM key of --tls_cert_file");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(2), "Deadline of the health check");
ABSL_FLAG(bool, quiet, false, "Print nothing; the exit code alone tells the result");

namespace {

constexpr char kUsage[] =
    "rlhf-health: exit 0 when the gRPC server at HOST:PORT (or --service on it) reports SERVING over "
    "grpc.health.v1, 1 otherwise, 2 on bad usage.\n\n"
    "Usage: rlhf-health [--service=NAME] [--tls_ca_file=PEM [--tls_cert_file=PEM --tls_key_file=PEM]] "
    "[--timeout=2s] HOST:PORT";

int Probe(const std::string& target) {
  const bool quiet = absl::GetFlag(FLAGS_quiet);
  rlhf::runtime::ClientOptions client;
  client.target = target;
  client.tls_ca_file = absl::GetFlag(FLAGS_tls_ca_file);
  client.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  client.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  auto channel = rlhf::runtime::MakeChannel(client);
  if (!channel.ok()) {
    std::fprintf(stderr, "rlhf-health: %s\n", std::string(channel.status().message()).c_str());
    return 2;
  }
  const std::string service = absl::GetFlag(FLAGS_service);
  const absl::Duration timeout = absl::GetFlag(FLAGS_timeout);
  if (timeout <= absl::ZeroDuration()) {
    std::fprintf(stderr, "rlhf-health: --timeout must be positive\n");
    return 2;
  }
  auto health = rlhf::runtime::CheckHealth(**channel, service, timeout);
  const std::string what = service.empty() ? target : absl::StrCat(target, " ", service);
  if (!quiet) std::printf("%s: %s\n", what.c_str(), rlhf::runtime::DescribeHealth(health).c_str());
  return health.ok() && *health == rlhf::runtime::HealthState::kServing ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view filename) { return absl::StrContains(filename, "health_probe"); };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(kUsage);
  const std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::fprintf(stderr, "%s\n", kUsage);
    return 2;
  }
  return Probe(args[1]);
}
