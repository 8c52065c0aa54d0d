// Client side of the runtime: channels to our services (plaintext or TLS, bearer token) and health checks.
#ifndef RLHF_COMMON_RUNTIME_CLIENT_H_
#define RLHF_COMMON_RUNTIME_CLIENT_H_

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace rlhf::runtime {

struct ClientOptions {
  // Target: host:port, or any gRPC target such as dns:///reward.rlhf.svc:50053 (with round_robin below).
  std::string target;
  // PEM CA bundle to verify the server; set -> TLS.
  std::string tls_ca_file;
  // PEM client certificate and key for mutual TLS.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Sent as `authorization: Bearer <token>` on every call when not empty.
  std::string bearer_token;
  // gRPC load-balancing policy, e.g. "round_robin" to spread calls across every address a DNS name resolves to.
  std::string load_balancing_policy;
  // Largest message in either direction, in bytes.
  int max_message_bytes = 64 << 20;
  // Longest wait between reconnection attempts to an unreachable server; zero keeps gRPC's default (120 s).
  absl::Duration max_reconnect_backoff = absl::ZeroDuration();
};

// A channel for `options`. InvalidArgument for an empty target or unreadable PEM files.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientOptions& options);

// Serving status of `service` ("" for the whole server) over grpc.health.v1.Health/Check.
enum class HealthState { kServing, kNotServing, kUnknownService };
absl::StatusOr<HealthState> CheckHealth(grpc::Channel& channel, const std::string& service, absl::Duration timeout);

// What a health probe prints for a CheckHealth result: "SERVING", "NOT_SERVING", "unknown service" or
// "unreachable (<status>)".
std::string DescribeHealth(const absl::StatusOr<HealthState>& health);

// The targets of each server behind `target`, for calls that must reach every replica (a weights update): a
// dns:///host:port target becomes one ipv4:/ipv6: target per address the name resolves to now, an ipv4:/ipv6: list
// one target per address; any other target stays as it is. A name that does not resolve stays as it is too (the
// call then reports the failure).
std::vector<std::string> ReplicaTargets(const std::string& target);

// A ClientContext with a deadline `timeout` from now.
std::unique_ptr<grpc::ClientContext> ContextWithTimeout(absl::Duration timeout);

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_CLIENT_H_
