// main() of every service binary: flags -> ServerOptions -> Server, then wait for SIGTERM and drain.
#ifndef RLHF_COMMON_RUNTIME_SERVER_MAIN_H_
#define RLHF_COMMON_RUNTIME_SERVER_MAIN_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/runtime/server.h"

namespace rlhf::runtime {

// A service the binary owns, with the name health reports it under.
struct OwnedService {
  std::string full_name;
  std::unique_ptr<grpc::Service> service;
};

// What a binary's handlers get when they are created: the metrics registry (register your families here) and the
// server's options as parsed from flags.
struct ServiceContext {
  prometheus::Registry* registry = nullptr;
  const ServerOptions* options = nullptr;
};

// Describes one service binary.
struct ServiceBinary {
  std::string name;                 // component name, e.g. "reward-scoring"
  std::string description;          // one line for --help
  int default_port = 50051;         // gRPC port when --listen_address is not given
  int default_metrics_port = 9464;  // /metrics port when --metrics_address is not given
  // Creates the services once flags are parsed and logging is set up. An error ends the process with exit code 1.
  std::function<absl::StatusOr<std::vector<OwnedService>>(const ServiceContext&)> create;
  // Called on SIGTERM before the server drains, to end calls that would otherwise wait out the drain (e.g. long
  // polls); may be empty.
  std::function<void()> before_drain;
  // Called after the server stopped taking calls (e.g. to stop an engine thread); may be empty.
  std::function<void()> on_shutdown;
};

// Parses the runtime flags (see --help) into ServerOptions for `binary`. Call after absl::ParseCommandLine.
absl::StatusOr<ServerOptions> ServerOptionsFromFlags(const ServiceBinary& binary);

// The whole main(): parses flags (--help lists them), sets up logging, starts the server, waits for SIGTERM or
// SIGINT, drains and returns the process exit code (0 after a clean drain, 1 on a start-up error, 2 on bad flags).
int ServerMain(int argc, char** argv, const ServiceBinary& binary);

// Sets absl's --help to list this project's flags (and not absl's own) under `usage`. Used by every binary.
void SetUpFlagUsage(const std::string& usage);

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_SERVER_MAIN_H_
