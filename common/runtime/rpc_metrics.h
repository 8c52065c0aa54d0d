// Per-RPC metrics and the request log line, recorded by a server interceptor for every method of every service.
#ifndef RLHF_COMMON_RUNTIME_RPC_METRICS_H_
#define RLHF_COMMON_RUNTIME_RPC_METRICS_H_

#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <string>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace rlhf::runtime {

// Prometheus families of the RPC layer, built once on an injected registry (tests pass their own).
//   rlhf_rpc_requests_total{service, method, code}       counter
//   rlhf_rpc_latency_seconds{service, method, code}      histogram, from the call's arrival to its status
//   rlhf_rpc_in_flight{service}                          gauge
// `service` is the binary's component name (e.g. "reward-scoring"); `method` the full gRPC method name.
class RpcMetrics {
 public:
  RpcMetrics(prometheus::Registry& registry, std::string service);

  void RecordStart();
  void RecordFinish(const std::string& method, const std::string& code, double seconds);
  double InFlight() const { return in_flight_.Value(); }

 private:
  std::string service_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& latency_;
  prometheus::Gauge& in_flight_;
};

// Latency buckets in seconds: 0.5 ms .. 2 min, wide enough for one token and for a PPO step.
const prometheus::Histogram::BucketBoundaries& RpcLatencyBuckets();

// gRPC's status code as Prometheus label text ("OK", "INVALID_ARGUMENT", ...).
std::string StatusCodeName(grpc::StatusCode code);

// Server interceptor factory: counts each call, times it, and logs one structured line a call on the "rpc" logger:
//   rpc method=/rlhf.v1.X/Y code=OK latency_ms=1.234 peer=ipv4:127.0.0.1:5555 request_id=...
// The request id is the caller's `x-request-id` metadata when given, else a fresh one; it is echoed back in the
// response's initial metadata. `rpc_metrics` must outlive the server.
class RpcObserverFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcObserverFactory(RpcMetrics* rpc_metrics) : rpc_metrics_(rpc_metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override;

 private:
  RpcMetrics* rpc_metrics_;
};

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_RPC_METRICS_H_
