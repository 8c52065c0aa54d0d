// A server process for shutdown tests: serves EchoService (its Slow method takes 1.5 s) the way every service binary
// does, prints "port=<n>" on stdout once serving, and drains on SIGTERM.
//   rlhf-test-echo-server [drain_delay_ms]
#include <cstdio>
#include <cstdlib>

#include "common/runtime/server.h"
#include "tests/testing/test_util.h"

int main(int argc, char** argv) {
  rlhf::runtime::BlockTerminationSignals();
  rlhf::runtime::ServerOptions options;
  options.name = "echo";
  options.listen_address = "127.0.0.1:0";
  options.metrics_address.clear();
  options.drain_delay = absl::Milliseconds(argc > 1 ? std::atoi(argv[1]) : 500);
  options.shutdown_deadline = absl::Seconds(5);
  rlhf::testing::EchoService echo(1500);
  auto server = rlhf::runtime::Server::Start(options, {}, nullptr, &echo);
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    return 3;
  }
  std::printf("port=%d\n", (*server)->port());
  std::fflush(stdout);
  rlhf::runtime::WaitForTerminationSignal();
  (*server)->Shutdown();
  return 0;
}
