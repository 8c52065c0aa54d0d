#include "common/runtime/auth.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"

namespace rlhf::runtime {
namespace {

constexpr char kBearerPrefix[] = "Bearer ";

struct TokenCheck {
  std::string token;
  std::vector<std::string> open_methods;

  bool IsOpen(absl::string_view path) const {
    for (const auto& open : open_methods) {
      if (absl::EndsWith(open, "/") ? absl::StartsWith(path, open) : path == open) return true;
    }
    return false;
  }
};

absl::string_view SliceView(const grpc_slice& slice) {
  return absl::string_view(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(slice)), GRPC_SLICE_LENGTH(slice));
}

// gRPC core's metadata processor: runs in the transport's auth filter for each call, before any handler.
void ProcessAuthMetadata(void* state, grpc_auth_context* /*context*/, const grpc_metadata* md, size_t num_md,
                         grpc_process_auth_metadata_done_cb done, void* user_data) {
  const auto* check = static_cast<const TokenCheck*>(state);
  absl::string_view path;
  bool authorized = false;
  for (size_t i = 0; i < num_md; ++i) {
    const absl::string_view key = SliceView(md[i].key);
    if (key == ":path") {
      path = SliceView(md[i].value);
    } else if (key == "authorization") {
      authorized = authorized || BearerTokenMatches(std::string(SliceView(md[i].value)), check->token);
    }
  }
  if (authorized || check->IsOpen(path)) {
    done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_OK, nullptr);
  } else {
    done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_UNAUTHENTICATED,
         "missing or invalid bearer token: send metadata 'authorization: Bearer <token>'");
  }
}

void DestroyTokenCheck(void* state) { delete static_cast<TokenCheck*>(state); }

// ServerCredentials over gRPC core credentials, so that a metadata processor works for plaintext servers too (the
// C++ InsecureServerCredentials refuses one).
class CoreServerCredentials final : public grpc::ServerCredentials {
 public:
  explicit CoreServerCredentials(grpc_server_credentials* creds) : creds_(creds) {}
  ~CoreServerCredentials() override { grpc_server_credentials_release(creds_); }

  void SetAuthMetadataProcessor(const std::shared_ptr<grpc::AuthMetadataProcessor>& /*processor*/) override {
    // Authentication is configured through SecurityOptions; a second processor would silently bypass it.
    GPR_ASSERT(false && "use SecurityOptions.bearer_token");
  }

  void InstallTokenCheck(TokenCheck check) {
    grpc_auth_metadata_processor processor;
    processor.process = &ProcessAuthMetadata;
    processor.destroy = &DestroyTokenCheck;
    processor.state = new TokenCheck(std::move(check));
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

}  // namespace

bool BearerTokenMatches(const std::string& metadata_value, const std::string& token) {
  if (token.empty() || !absl::StartsWith(metadata_value, kBearerPrefix)) return false;
  const absl::string_view given = absl::string_view(metadata_value).substr(sizeof(kBearerPrefix) - 1);
  unsigned char diff = given.size() == token.size() ? 0 : 1;
  for (size_t i = 0; i < token.size(); ++i) {
    diff |= static_cast<unsigned char>(token[i]) ^ static_cast<unsigned char>(i < given.size() ? given[i] : 0);
  }
  return diff == 0;
}

absl::StatusOr<std::string> ReadBearerTokenFile(const std::string& flag, const std::string& path) {
  auto contents = util::ReadFile(path);
  if (!contents.ok()) {
    return absl::Status(contents.status().code(), absl::StrCat(flag, ": ", contents.status().message()));
  }
  std::string token(absl::StripAsciiWhitespace(contents->substr(0, contents->find('\n'))));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " holds no token on its first line"));
  }
  return token;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const SecurityOptions& options) {
  grpc_server_credentials* creds = nullptr;
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert_file and --tls_key_file must be given together");
  }
  if (!options.tls_cert_file.empty()) {
    ASSIGN_OR_RETURN(const std::string cert, ReadPem(options.tls_cert_file, "tls_cert_file"));
    ASSIGN_OR_RETURN(const std::string key, ReadPem(options.tls_key_file, "tls_key_file"));
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
  if (!options.bearer_token.empty()) {
    server_creds->InstallTokenCheck(TokenCheck{options.bearer_token, options.open_methods});
  }
  return server_creds;
}

}  // namespace rlhf::runtime
