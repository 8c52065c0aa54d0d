// Per-RPC metrics and the request log line, recorded by a server interceptor for every method of every service.
#ifndef RLHF_COMMON_RUNTIME_RPC_METRICS_H_
#define RLHF_COMMON_RUNTIME_RPC_METRICS_H_

#include <grpcpp/support/server_interceptor.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace rlhf::runtime {

class AccessPolicy;
class Authenticator;
class MemoryTrimmer;
class RequestGuard;

// Prometheus families of the RPC layer, built once on an injected registry (tests pass their own).
//   rlhf_rpc_requests_total{service, method, code}       counter
//   rlhf_rpc_latency_seconds{service, method, code}      histogram, from the call's arrival to its status
//   rlhf_rpc_in_flight{service}                          gauge
// `service` is the binary's component name (e.g. "reward-scoring"); `method` the full gRPC method name. Calls refused
// before any handler (UNAUTHENTICATED, PERMISSION_DENIED) are counted in rlhf_rpc_requests_total too, with no
// latency and never in flight. Thread-safe.
class RpcMetrics {
 public:
  RpcMetrics(prometheus::Registry& registry, std::string service);

  // A call to `method` started; returns its id for RecordFinish.
  uint64_t RecordStart(const std::string& method);
  void RecordFinish(uint64_t id, const std::string& method, const std::string& code, double seconds);
  // A call refused before any handler ran.
  void RecordRefused(const std::string& method, const std::string& code);
  double InFlight() const { return in_flight_.Value(); }
  // The calls in flight, oldest first: "METHOD (running 12.3 s)".
  std::vector<std::string> InFlightCalls() const;

 private:
  std::string service_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& latency_;
  prometheus::Gauge& in_flight_;
  mutable std::mutex calls_mu_;
  uint64_t next_call_id_ = 1;
  std::map<uint64_t, std::pair<std::string, std::chrono::steady_clock::time_point>> calls_;
};

// Logs calls refused before any handler on the "rpc" logger (warn), at most `max_lines_per_second` lines a second so
// that a flood of bad calls cannot flood the log; the next line written says how many were left out
// (suppressed=N). The metrics count every call. Thread-safe.
class RefusedCallLog {
 public:
  explicit RefusedCallLog(int max_lines_per_second = 10) : max_lines_per_second_(max_lines_per_second) {}
  void Log(absl::string_view method, const std::string& code, absl::string_view message);
  int64_t suppressed_total() const;

 private:
  const int max_lines_per_second_;
  mutable std::mutex mu_;
  std::chrono::steady_clock::time_point window_start_{};
  int lines_in_window_ = 0;
  int64_t suppressed_ = 0;
  int64_t suppressed_total_ = 0;
};

// Latency buckets in seconds: 0.5 ms .. 2 min, wide enough for one token and for a PPO step.
const prometheus::Histogram::BucketBoundaries& RpcLatencyBuckets();

// gRPC's status code as Prometheus label text ("OK", "INVALID_ARGUMENT", ...).
std::string StatusCodeName(grpc::StatusCode code);

// What the RPC interceptor works with; everything must outlive the server. Only `metrics` is required.
struct RpcObserverOptions {
  RpcMetrics* metrics = nullptr;
  // Refusals recorded by the per-method request checks, sent instead of gRPC's bare UNIMPLEMENTED.
  RequestGuard* request_guard = nullptr;
  // Asked for a trim after calls with large requests, and after calls to `policy`'s large_requests methods.
  MemoryTrimmer* trimmer = nullptr;
  const AccessPolicy* policy = nullptr;
  // Names the caller in the log line (caller=NAME) when set.
  const Authenticator* authenticator = nullptr;
};

// Server interceptor factory: counts each call, times it, and logs one structured line a call on the "rpc" logger:
//   rpc method=/rlhf.v1.X/Y code=OK latency_ms=1.234 peer=ipv4:127.0.0.1:5555 request_id=... [caller=NAME]
// The request id is the caller's `x-request-id` metadata when given, else a fresh one; it is echoed back in the
// response's initial metadata.
class RpcObserverFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcObserverFactory(RpcObserverOptions options) : options_(options) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override;

 private:
  RpcObserverOptions options_;
};

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_RPC_METRICS_H_
