// Transport security and authentication for every server: TLS / mutual TLS, and callers identified by a bearer token
// or a client certificate, each identity holding roles that the access policy (access_policy.h) checks per method
// before any handler runs.
//
// Why handlers ask the Authenticator (Identify(context)) instead of reading a property the check attached: gRPC's
// auth metadata processor is handed the connection's auth context, shared by every call on that connection, so a
// property set there for one call would be seen by the others. The identity is a pure function of the call's
// `authorization` metadata and the connection's certificate, so computing it again gives the processor's answer.
#ifndef RLHF_COMMON_RUNTIME_AUTH_H_
#define RLHF_COMMON_RUNTIME_AUTH_H_

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_context.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/runtime/access_policy.h"

namespace rlhf::runtime {

// The identity a token file whose only line is a bare token (no name, no role) gives its token: today's single
// shared token, allowed everything (role admin).
inline constexpr char kDefaultIdentityName[] = "default";

// The callers a server knows: bearer tokens (--auth_token_file) and client-certificate subjects
// (--tls_client_roles_file), each mapped to an identity. Immutable and thread-safe.
class Authenticator {
 public:
  struct Token {
    std::string token;
    Identity identity;
  };

  // Reads --auth_token_file and --tls_client_roles_file (either may be empty, not both).
  //
  // Token file: one caller a line, `TOKEN NAME ROLE[,ROLE...]`; blank lines and lines starting with '#' are skipped.
  // A file whose only line is a bare TOKEN gives it the identity "default" with role admin. Tokens are RFC 6750
  // b64token characters (letters, digits, -._~+/ and trailing =), unique; a name may have several tokens (rotation).
  // Certificate roles file: `COMMON_NAME ROLE[,ROLE...]` a line: a client certificate whose verified subject common
  // name is COMMON_NAME is that identity. Errors name the flag and file:line.
  static absl::StatusOr<std::shared_ptr<const Authenticator>> FromFiles(const std::string& token_file,
                                                                        const std::string& certificate_roles_file);
  // Parses the text of a token file; `where` prefixes errors ("--auth_token_file: path").
  static absl::StatusOr<std::vector<Token>> ParseTokens(absl::string_view where, absl::string_view text);

  Authenticator(std::vector<Token> tokens, std::map<std::string, RoleSet, std::less<>> certificate_roles);

  // Who makes a call that sent `authorization` metadata values over a connection whose verified client certificate
  // has subject common name `common_name` ("" without one). A bearer token, when one is sent, decides (a token that
  // matches no line is refused even on a good certificate); otherwise the certificate. UNAUTHENTICATED naming what
  // is missing or wrong when neither identifies a caller; a certificate this server has no roles for is an
  // identity with no roles. Tokens are compared in constant time, against every known token.
  absl::StatusOr<Identity> Identify(const std::vector<absl::string_view>& authorization,
                                    absl::string_view common_name) const;
  // The same for a call being served: its metadata and its connection's certificate.
  absl::StatusOr<Identity> Identify(const grpc::ServerContextBase& context) const;

  size_t token_count() const { return tokens_.size(); }
  bool has_certificate_roles() const { return !certificate_roles_.empty(); }

 private:
  std::vector<Token> tokens_;
  std::map<std::string, RoleSet, std::less<>> certificate_roles_;
};

// How a server accepts connections and calls.
struct SecurityOptions {
  // PEM files. Both set -> TLS; neither -> plaintext. `client_ca_file` also set -> mutual TLS (clients must present
  // a certificate signed by that CA).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string client_ca_file;
  // Who may call. Null: no authentication, every call is let through and handlers see no identity.
  std::shared_ptr<const Authenticator> authenticator;
};

// Told about each call the server refuses before any handler runs (UNAUTHENTICATED or PERMISSION_DENIED), on one of
// gRPC's threads: the method as the caller sent it, the code and the message sent back.
using RefusedCallObserver =
    std::function<void(absl::string_view method, grpc::StatusCode code, absl::string_view message)>;

// Server credentials for `options`: plaintext or (m)TLS, with the check of `policy` installed in gRPC's
// authentication layer when `options.authenticator` is set, so refused calls end before any handler runs.
// InvalidArgument / NotFound naming the flag when a PEM file is missing, unreadable, not PEM, or the key does not
// belong to the certificate, or only one of cert and key is given.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const SecurityOptions& options,
                                                                              const AccessPolicy& policy,
                                                                              RefusedCallObserver on_refused);

// The token of an `authorization` value "Bearer <token>": the scheme in any case (RFC 6750), then one or more spaces.
// nullopt for another scheme or no token.
std::optional<absl::string_view> BearerToken(absl::string_view metadata_value);

// True when `metadata_value` is a bearer credential for exactly `token` (compared in constant time).
bool BearerTokenMatches(absl::string_view metadata_value, absl::string_view token);

// Reads the token a client sends from a file: the first field of the first line that is not blank or a comment, so
// that a server's token file (`TOKEN NAME ROLES` lines) also serves as its first caller's --token_file.
// InvalidArgument when there is none. Errors name `flag`, the flag that gave the path (e.g. "--token_file").
absl::StatusOr<std::string> ReadBearerTokenFile(const std::string& flag, const std::string& path);

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_AUTH_H_
