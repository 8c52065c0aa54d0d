// Transport security and bearer-token authentication for every server.
#ifndef RLHF_COMMON_RUNTIME_AUTH_H_
#define RLHF_COMMON_RUNTIME_AUTH_H_

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace rlhf::runtime {

// How a server accepts connections and calls.
struct SecurityOptions {
  // PEM files. Both set -> TLS; neither -> plaintext. `client_ca_file` also set -> mutual TLS (clients must present
  // a certificate signed by that CA).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string client_ca_file;
  // Bearer token that callers must send as `authorization: Bearer <token>`; empty disables the check.
  std::string bearer_token;
  // Methods that need no token (full names like "/grpc.health.v1.Health/Check" or a service prefix ending in '/').
  std::vector<std::string> open_methods = {"/grpc.health.v1.Health/"};
};

// Reads a bearer token from a file: the first line, trimmed of whitespace. InvalidArgument when it is empty. Errors
// name `flag`, the flag that gave the path (e.g. "--auth_token_file").
absl::StatusOr<std::string> ReadBearerTokenFile(const std::string& flag, const std::string& path);

// Server credentials for `options`: plaintext or (m)TLS, with the bearer-token check installed in gRPC's
// authentication layer, so calls without the token are refused with UNAUTHENTICATED before any handler runs.
// InvalidArgument / NotFound when a PEM file is missing or only one of cert and key is given.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const SecurityOptions& options);

// True when `metadata_value` is "Bearer <token>" for exactly `token` (compared in constant time).
bool BearerTokenMatches(const std::string& metadata_value, const std::string& token);

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_AUTH_H_
