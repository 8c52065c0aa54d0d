#include "common/runtime/auth.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/runtime/status_util.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"

namespace rlhf::runtime {
namespace {

constexpr size_t kMaxNameBytes = 128;

// RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
bool IsB64Token(absl::string_view token) {
  size_t i = 0;
  while (i < token.size() && (absl::ascii_isalnum(token[i]) || absl::StrContains("-._~+/", token[i]))) ++i;
  if (i == 0) return false;
  while (i < token.size() && token[i] == '=') ++i;
  return i == token.size();
}

bool IsIdentityName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  for (const char c : name) {
    if (!absl::ascii_isalnum(c) && !absl::StrContains("._@-", c)) return false;
  }
  return true;
}

// Equal length and bytes, in time that depends only on the lengths.
bool ConstantTimeEquals(absl::string_view given, absl::string_view expected) {
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    diff |= static_cast<unsigned char>(expected[i]) ^ static_cast<unsigned char>(i < given.size() ? given[i] : 0);
  }
  return diff == 0;
}

// The lines of `text` that are neither blank nor comments, with their 1-based numbers, trimmed.
std::vector<std::pair<int, absl::string_view>> ContentLines(absl::string_view text) {
  std::vector<std::pair<int, absl::string_view>> lines;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    lines.emplace_back(number, line);
  }
  return lines;
}

absl::StatusOr<std::map<std::string, RoleSet, std::less<>>> ParseCertificateRoles(absl::string_view where,
                                                                                   absl::string_view text) {
  std::map<std::string, RoleSet, std::less<>> roles;
  for (const auto& [number, line] : ContentLines(text)) {
    // The roles are the last field; the common name, which may hold spaces, is the rest.
    const size_t space = line.find_last_of(" \t");
    if (space == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ":", number, ": expected 'COMMON_NAME ROLE[,ROLE...]'"));
    }
    const std::string name(absl::StripAsciiWhitespace(line.substr(0, space)));
    auto parsed = ParseRoles(line.substr(space + 1));
    if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ":", number, ": ", parsed.status().message()));
    if (!roles.emplace(name, *parsed).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, ":", number, ": common name '", name, "' is listed twice"));
    }
  }
  if (roles.empty()) return absl::InvalidArgumentError(absl::StrCat(where, " lists no certificate subject"));
  return roles;
}

absl::StatusOr<std::string> ReadFlagFile(const std::string& flag, const std::string& path) {
  auto contents = util::ReadFile(path);
  if (!contents.ok()) {
    return absl::Status(contents.status().code(), absl::StrCat(flag, ": ", contents.status().message()));
  }
  return contents;
}

// What gRPC core's auth metadata processor needs: who is known, and who may call what.
struct AuthCheck {
  std::shared_ptr<const Authenticator> authenticator;
  AccessPolicy policy;
  RefusedCallObserver on_refused;
};

absl::string_view SliceView(const grpc_slice& slice) {
  return absl::string_view(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(slice)), GRPC_SLICE_LENGTH(slice));
}

// The verified client certificate's subject common name on this connection, or "".
absl::string_view PeerCommonName(const grpc_auth_context* context) {
  if (context == nullptr) return {};
  grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(context, GRPC_X509_CN_PROPERTY_NAME);
  const grpc_auth_property* property = grpc_auth_property_iterator_next(&it);
  if (property == nullptr) return {};
  return absl::string_view(property->value, property->value_length);
}

// gRPC core's metadata processor: runs in the transport's auth filter for each call, before any handler.
void ProcessAuthMetadata(void* state, grpc_auth_context* context, const grpc_metadata* md, size_t num_md,
                         grpc_process_auth_metadata_done_cb done, void* user_data) {
  const auto* check = static_cast<const AuthCheck*>(state);
  absl::string_view path;
  std::vector<absl::string_view> authorization;
  for (size_t i = 0; i < num_md; ++i) {
    const absl::string_view key = SliceView(md[i].key);
    if (key == ":path") {
      path = SliceView(md[i].value);
    } else if (key == "authorization") {
      authorization.push_back(SliceView(md[i].value));
    }
  }
  if (check->policy.IsOpen(path)) {
    done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_OK, nullptr);
    return;
  }
  absl::StatusOr<Identity> identity = check->authenticator->Identify(authorization, PeerCommonName(context));
  absl::Status status = identity.ok() ? check->policy.Authorize(*identity, path) : identity.status();
  if (status.ok()) {
    done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_OK, nullptr);
    return;
  }
  const grpc::Status refusal = ToGrpcStatus(status);  // the path is the caller's bytes: keep the message UTF-8
  if (check->on_refused) check->on_refused(path, refusal.error_code(), refusal.error_message());
  done(user_data, nullptr, 0, nullptr, 0, static_cast<grpc_status_code>(refusal.error_code()),
       refusal.error_message().c_str());
}

void DestroyAuthCheck(void* state) { delete static_cast<AuthCheck*>(state); }

// ServerCredentials over gRPC core credentials, so that a metadata processor works for plaintext servers too (the
// C++ InsecureServerCredentials refuses one).
class CoreServerCredentials final : public grpc::ServerCredentials {
 public:
  explicit CoreServerCredentials(grpc_server_credentials* creds) : creds_(creds) {}
  ~CoreServerCredentials() override { grpc_server_credentials_release(creds_); }

  void SetAuthMetadataProcessor(const std::shared_ptr<grpc::AuthMetadataProcessor>& /*processor*/) override {
    // Authentication is configured through SecurityOptions; a second processor would silently bypass it.
    GPR_ASSERT(false && "use SecurityOptions.authenticator");
  }

  void InstallAuthCheck(AuthCheck check) {
    grpc_auth_metadata_processor processor;
    processor.process = &ProcessAuthMetadata;
    processor.destroy = &DestroyAuthCheck;
    processor.state = new AuthCheck(std::move(check));
    grpc_server_credentials_set_auth_metadata_processor(creds_, processor);
  }

 private:
  int AddPortToServer(const std::string& addr, grpc_server* server) override {
    return grpc_server_add_http2_port(server, addr.c_str(), creds_);
  }

  grpc_server_credentials* creds_;
};

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* flag) {
  auto contents = util::ReadFile(path);
  if (!contents.ok()) {
    return absl::Status(contents.status().code(), absl::StrCat("--", flag, ": ", contents.status().message()));
  }
  if (!absl::StrContains(*contents, "-----BEGIN ")) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", path, " is not a PEM file"));
  }
  return contents;
}

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

// The first certificate of `cert` and the key in `key` parse, and the key is the certificate's (OpenSSL's
// X509_check_private_key). gRPC would otherwise fail only when binding the port, as if the address were in use.
absl::Status CheckKeyMatchesCertificate(const std::string& cert, const std::string& key, const std::string& cert_path,
                                        const std::string& key_path) {
  std::unique_ptr<BIO, BioFree> cert_bio(BIO_new_mem_buf(cert.data(), static_cast<int>(cert.size())));
  std::unique_ptr<BIO, BioFree> key_bio(BIO_new_mem_buf(key.data(), static_cast<int>(key.size())));
  std::unique_ptr<X509, X509Free> x509(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  std::unique_ptr<EVP_PKEY, KeyFree> pkey(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  const bool matches = x509 && pkey && X509_check_private_key(x509.get(), pkey.get()) == 1;
  ERR_clear_error();
  if (!x509) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_cert_file: ", cert_path, " holds no PEM certificate that OpenSSL can read"));
  }
  if (!pkey) {
    return absl::InvalidArgumentError(absl::StrCat("--tls_key_file: ", key_path,
                                                   " holds no PEM private key that OpenSSL can read (encrypted keys "
                                                   "are not supported)"));
  }
  if (!matches) {
    return absl::InvalidArgumentError(absl::StrCat("--tls_key_file ", key_path,
                                                   " does not match the certificate in --tls_cert_file ", cert_path,
                                                   ": the certificate was issued for another key"));
  }
  return absl::OkStatus();
}

}  // namespace

std::optional<absl::string_view> BearerToken(absl::string_view metadata_value) {
  constexpr absl::string_view kScheme = "bearer";
  if (metadata_value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(metadata_value.substr(0, kScheme.size()), kScheme) ||
      metadata_value[kScheme.size()] != ' ') {
    return std::nullopt;
  }
  absl::string_view token = metadata_value.substr(kScheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  if (token.empty()) return std::nullopt;
  return token;
}

bool BearerTokenMatches(absl::string_view metadata_value, absl::string_view token) {
  const std::optional<absl::string_view> given = BearerToken(metadata_value);
  return !token.empty() && given.has_value() && ConstantTimeEquals(*given, token);
}

absl::StatusOr<std::vector<Authenticator::Token>> Authenticator::ParseTokens(absl::string_view where,
                                                                            absl::string_view text) {
  const auto lines = ContentLines(text);
  std::vector<Token> tokens;
  std::map<std::string, int, std::less<>> token_lines;
  for (const auto& [number, line] : lines) {
    const std::vector<absl::string_view> fields = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    const std::string at = absl::StrCat(where, ":", number, ": ");
    Token entry;
    if (fields.size() == 1 && lines.size() == 1) {
      entry.identity = {kDefaultIdentityName, kRoleAdmin};
    } else if (fields.size() == 3) {
      if (!IsIdentityName(fields[1])) {
        return absl::InvalidArgumentError(absl::StrCat(
            at, "name '", fields[1], "' must be 1 to ", kMaxNameBytes, " letters, digits or ._@- characters"));
      }
      auto roles = ParseRoles(fields[2]);
      if (!roles.ok()) return absl::InvalidArgumentError(absl::StrCat(at, roles.status().message()));
      entry.identity = {std::string(fields[1]), *roles};
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          at, "expected 'TOKEN NAME ROLE[,ROLE...]' (a bare TOKEN only as the file's one line), got ", fields.size(),
          fields.size() == 1 ? " field" : " fields"));
    }
    // Errors never quote a token.
    if (!IsB64Token(fields[0])) {
      return absl::InvalidArgumentError(
          absl::StrCat(at, "the token has characters outside RFC 6750's b64token (letters, digits, -._~+/ and "
                           "trailing =)"));
    }
    if (auto [it, inserted] = token_lines.emplace(std::string(fields[0]), number); !inserted) {
      return absl::InvalidArgumentError(absl::StrCat(at, "the same token as line ", it->second));
    }
    entry.token = std::string(fields[0]);
    tokens.push_back(std::move(entry));
  }
  if (tokens.empty()) return absl::InvalidArgumentError(absl::StrCat(where, " holds no token"));
  return tokens;
}

absl::StatusOr<std::shared_ptr<const Authenticator>> Authenticator::FromFiles(
    const std::string& token_file, const std::string& certificate_roles_file) {
  if (token_file.empty() && certificate_roles_file.empty()) {
    return absl::InvalidArgumentError("neither --auth_token_file nor --tls_client_roles_file is given");
  }
  std::vector<Token> tokens;
  if (!token_file.empty()) {
    ASSIGN_OR_RETURN(const std::string text, ReadFlagFile("--auth_token_file", token_file));
    ASSIGN_OR_RETURN(tokens, ParseTokens(absl::StrCat("--auth_token_file: ", token_file), text));
  }
  std::map<std::string, RoleSet, std::less<>> certificate_roles;
  if (!certificate_roles_file.empty()) {
    ASSIGN_OR_RETURN(const std::string text, ReadFlagFile("--tls_client_roles_file", certificate_roles_file));
    ASSIGN_OR_RETURN(certificate_roles,
                     ParseCertificateRoles(absl::StrCat("--tls_client_roles_file: ", certificate_roles_file), text));
  }
  return std::make_shared<const Authenticator>(std::move(tokens), std::move(certificate_roles));
}

Authenticator::Authenticator(std::vector<Token> tokens, std::map<std::string, RoleSet, std::less<>> certificate_roles)
    : tokens_(std::move(tokens)), certificate_roles_(std::move(certificate_roles)) {}

absl::StatusOr<Identity> Authenticator::Identify(const std::vector<absl::string_view>& authorization,
                                                 absl::string_view common_name) const {
  if (!authorization.empty()) {
    const Token* found = nullptr;
    bool any_bearer = false;
    for (const absl::string_view value : authorization) {
      const std::optional<absl::string_view> token = BearerToken(value);
      if (!token.has_value()) continue;
      any_bearer = true;
      // Every known token is compared, so the time taken does not tell which one matched or how many exist.
      for (const Token& known : tokens_) {
        if (ConstantTimeEquals(*token, known.token) && found == nullptr) found = &known;
      }
    }
    if (found != nullptr) return found->identity;
    return absl::UnauthenticatedError(any_bearer ? "invalid bearer token"
                                                 : "the authorization metadata is not 'Bearer <token>'");
  }
  if (!common_name.empty() && !certificate_roles_.empty()) {
    auto it = certificate_roles_.find(common_name);
    return Identity{std::string(common_name), it == certificate_roles_.end() ? RoleSet{0} : it->second};
  }
  return absl::UnauthenticatedError(
      certificate_roles_.empty() ? "missing bearer token: send metadata 'authorization: Bearer <token>'"
                                 : "missing credentials: send metadata 'authorization: Bearer <token>' or a client "
                                   "certificate");
}

absl::StatusOr<Identity> Authenticator::Identify(const grpc::ServerContextBase& context) const {
  std::vector<absl::string_view> authorization;
  const auto range = context.client_metadata().equal_range("authorization");
  for (auto it = range.first; it != range.second; ++it) {
    authorization.emplace_back(it->second.data(), it->second.size());
  }
  std::string common_name;
  if (const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context()) {
    const std::vector<grpc::string_ref> names = auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME);
    if (!names.empty()) common_name.assign(names.front().data(), names.front().size());
  }
  return Identify(authorization, common_name);
}

absl::StatusOr<std::string> ReadBearerTokenFile(const std::string& flag, const std::string& path) {
  ASSIGN_OR_RETURN(const std::string contents, ReadFlagFile(flag, path));
  const auto lines = ContentLines(contents);
  if (lines.empty()) return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " holds no token"));
  const absl::string_view line = lines.front().second;
  return std::string(line.substr(0, line.find_first_of(" \t")));
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const SecurityOptions& options,
                                                                              const AccessPolicy& policy,
                                                                              RefusedCallObserver on_refused) {
  grpc_server_credentials* creds = nullptr;
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert_file and --tls_key_file must be given together");
  }
  if (!options.tls_cert_file.empty()) {
    ASSIGN_OR_RETURN(const std::string cert, ReadPem(options.tls_cert_file, "tls_cert_file"));
    ASSIGN_OR_RETURN(const std::string key, ReadPem(options.tls_key_file, "tls_key_file"));
    RETURN_IF_ERROR(CheckKeyMatchesCertificate(cert, key, options.tls_cert_file, options.tls_key_file));
    std::string client_ca;
    if (!options.client_ca_file.empty()) {
      ASSIGN_OR_RETURN(client_ca, ReadPem(options.client_ca_file, "tls_client_ca_file"));
    }
    grpc_ssl_pem_key_cert_pair pair{key.c_str(), cert.c_str()};
    creds = grpc_ssl_server_credentials_create_ex(client_ca.empty() ? nullptr : client_ca.c_str(), &pair, 1,
                                                  client_ca.empty()
                                                      ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                      : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY,
                                                  nullptr);
    if (creds == nullptr) return absl::InvalidArgumentError("TLS credentials could not be created from the PEM files");
  } else if (!options.client_ca_file.empty()) {
    return absl::InvalidArgumentError("--tls_client_ca_file needs --tls_cert_file and --tls_key_file");
  } else {
    creds = grpc_insecure_server_credentials_create();
  }
  auto server_creds = std::make_shared<CoreServerCredentials>(creds);
  if (options.authenticator != nullptr) {
    if (options.authenticator->has_certificate_roles() && options.client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_roles_file needs --tls_client_ca_file: without mutual TLS no client certificate is verified");
    }
    server_creds->InstallAuthCheck(AuthCheck{options.authenticator, policy, std::move(on_refused)});
  }
  return server_creds;
}

}  // namespace rlhf::runtime
