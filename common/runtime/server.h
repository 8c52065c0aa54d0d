// The server runtime every service binary runs on: gRPC with health, reflection, auth, per-RPC metrics and logs,
// a Prometheus /metrics endpoint, bounded messages and graceful shutdown. A service brings only its handlers.
#ifndef RLHF_COMMON_RUNTIME_SERVER_H_
#define RLHF_COMMON_RUNTIME_SERVER_H_

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/runtime/access_policy.h"
#include "common/runtime/auth.h"
#include "common/runtime/memory_trimmer.h"
#include "common/runtime/metrics_http_server.h"
#include "common/runtime/request_guard.h"
#include "common/runtime/rpc_metrics.h"
#include "prometheus/registry.h"

namespace rlhf::runtime {

struct ServerOptions {
  // Component name used in logs and metric labels, e.g. "reward-scoring".
  std::string name;
  // gRPC listen address, host:port; port 0 picks a free one (see Server::port()).
  std::string listen_address = "0.0.0.0:50051";
  // Prometheus /metrics listen address, host:port; port 0 picks a free one; empty disables the endpoint.
  std::string metrics_address = "0.0.0.0:9464";
  SecurityOptions security;
  // Who may call which method, and which methods take large requests. Enforced when security.authenticator is set;
  // the large_requests marks apply always.
  AccessPolicy access = AccessPolicy::Suite();
  // Largest request of a method not marked large_requests (and of the messages of client streams that are not),
  // in bytes. Larger requests fail with RESOURCE_EXHAUSTED naming the limit, before they are parsed.
  int max_request_bytes = 4 << 20;
  // Largest request of a large_requests method (weights, training data, rollouts, task batches) and largest
  // response, in bytes. At least max_request_bytes.
  int max_message_bytes = 64 << 20;
  // HTTP/2 streams (concurrent calls) a single client connection may open.
  int max_concurrent_streams = 256;
  // On shutdown, how long health reports NOT_SERVING before the server stops taking calls (lets load balancers and
  // Kubernetes readiness probes move traffic away).
  absl::Duration drain_delay = absl::ZeroDuration();
  // After the drain delay, how long in-flight calls may run before they are cancelled.
  absl::Duration shutdown_deadline = absl::Seconds(30);
};

// A gRPC service to serve, with the full name health reports it under (e.g. "rlhf.v1.RewardScoringService").
struct ServiceEntry {
  std::string full_name;
  grpc::Service* service = nullptr;  // not owned; must outlive the Server
};

// A running server. Thread-safe.
class Server {
 public:
  // Builds and starts the server: every service in `services` (and `generic_service`, when given, for unknown
  // methods) on `options.listen_address`. Health reports SERVING for "" and each service. `registry` receives the
  // RPC metrics and is served on /metrics; the caller may register its own families on it.
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options,
                                                       const std::vector<ServiceEntry>& services,
                                                       std::shared_ptr<prometheus::Registry> registry,
                                                       grpc::CallbackGenericService* generic_service = nullptr);
  ~Server();

  // Bound ports (useful when the address asked for port 0).
  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  const ServerOptions& options() const { return options_; }
  prometheus::Registry& registry() { return *registry_; }

  // Sets one service's health status ("" is the whole server). Ignored once shutdown began.
  void SetServing(const std::string& service_full_name, bool serving);

  // Graceful shutdown: health turns NOT_SERVING for every service, then after `drain_delay` the server stops taking
  // new calls and lets in-flight calls finish until `shutdown_deadline`, when the rest are cancelled. Returns when
  // the server has stopped (which waits for every handler to finish: a handler that ignores cancellation keeps it
  // waiting; ServerMain bounds the whole shutdown). Idempotent.
  void Shutdown();

  // Trims done to give memory back after large messages (memory_trimmer.h).
  int64_t memory_trims() const { return trimmer_->trims(); }

  // The calls in flight, oldest first: "METHOD (running 12.3 s)".
  std::vector<std::string> InFlightCalls() const { return rpc_metrics_->InFlightCalls(); }

 private:
  Server() = default;

  ServerOptions options_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<RpcMetrics> rpc_metrics_;
  std::unique_ptr<RefusedCallLog> refused_log_;
  std::unique_ptr<MemoryTrimmer> trimmer_;
  std::unique_ptr<RequestGuard> request_guard_;
  std::unique_ptr<RpcObserverOptions> observer_options_;
  // Declared after what its calls use, so that it is destroyed first.
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsHttpServer> metrics_server_;
  std::vector<std::string> service_names_;
  int port_ = 0;
  int metrics_port_ = 0;
  std::mutex shutdown_mu_;
  bool shut_down_ = false;
};

// Blocks SIGTERM and SIGINT in the calling thread and in the threads it starts from now on, so that
// WaitForTerminationSignal can take them synchronously. Call at the top of main, before any thread exists.
void BlockTerminationSignals();

// Waits for SIGTERM or SIGINT (blocked by BlockTerminationSignals) and returns its number.
int WaitForTerminationSignal();

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_SERVER_H_
