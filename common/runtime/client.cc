#include "common/runtime/client.h"

#include <arpa/inet.h>
#include <grpcpp/create_channel.h>
#include <netdb.h>
#include <sys/socket.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/client_interceptor.h>

#include <algorithm>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/runtime/status_util.h"
#include "common/util/file_util.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace rlhf::runtime {
namespace {

// Adds `authorization: Bearer <token>` to every call of a channel (plaintext or TLS alike).
class BearerTokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", *header_);
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;
};

class BearerTokenInterceptorFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(const std::string& token) : header_(absl::StrCat("Bearer ", token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo* /*info*/) override {
    return new BearerTokenInterceptor(&header_);
  }

 private:
  std::string header_;
};

absl::StatusOr<std::string> ReadOptionalFile(const std::string& path) {
  if (path.empty()) return std::string();
  return util::ReadFile(path);
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientOptions& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("client target address is empty");
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (!options.tls_ca_file.empty() || !options.tls_cert_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    auto ca = ReadOptionalFile(options.tls_ca_file);
    auto cert = ReadOptionalFile(options.tls_cert_file);
    auto key = ReadOptionalFile(options.tls_key_file);
    for (const auto* status : {&ca.status(), &cert.status(), &key.status()}) {
      if (!status->ok()) return *status;
    }
    ssl.pem_root_certs = *ca;
    ssl.pem_cert_chain = *cert;
    ssl.pem_private_key = *key;
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  if (!options.load_balancing_policy.empty()) args.SetLoadBalancingPolicyName(options.load_balancing_policy);
  if (options.max_reconnect_backoff > absl::ZeroDuration()) {
    const int backoff_ms = static_cast<int>(absl::ToInt64Milliseconds(options.max_reconnect_backoff));
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::min(backoff_ms, 1000));
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, std::min(backoff_ms, 1000));
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, backoff_ms);
    // A private subchannel pool, so that this channel does not inherit another channel's backoff state.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!options.bearer_token.empty()) {
    interceptors.push_back(std::make_unique<BearerTokenInterceptorFactory>(options.bearer_token));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(options.target, credentials, args,
                                                                 std::move(interceptors));
}

std::unique_ptr<grpc::ClientContext> ContextWithTimeout(absl::Duration timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return context;
}

absl::StatusOr<HealthState> CheckHealth(grpc::Channel& channel, const std::string& service, absl::Duration timeout) {
  auto stub = grpc::health::v1::Health::NewStub(std::shared_ptr<grpc::Channel>(&channel, [](grpc::Channel*) {}));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  auto context = ContextWithTimeout(timeout);
  const grpc::Status status = stub->Check(context.get(), request, &response);
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) return HealthState::kUnknownService;
  if (!status.ok()) return FromGrpcStatus(status);
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? HealthState::kServing
                                                                             : HealthState::kNotServing;
}

std::string DescribeHealth(const absl::StatusOr<HealthState>& health) {
  if (!health.ok()) return absl::StrCat("unreachable (", health.status().ToString(), ")");
  switch (*health) {
    case HealthState::kServing: return "SERVING";
    case HealthState::kNotServing: return "NOT_SERVING";
    case HealthState::kUnknownService: return "unknown service";
  }
  return "unknown state";
}

std::vector<std::string> ReplicaTargets(const std::string& target) {
  for (const char* scheme : {"ipv4:", "ipv6:"}) {
    if (!absl::StartsWith(target, scheme)) continue;
    std::vector<std::string> out;
    for (absl::string_view address : absl::StrSplit(target.substr(5), ',', absl::SkipEmpty())) {
      out.push_back(absl::StrCat(scheme, address));
    }
    return out.empty() ? std::vector<std::string>{target} : out;
  }
  if (!absl::StartsWith(target, "dns:")) return {target};
  // dns:[//authority/]host:port
  std::string rest = target.substr(4);
  if (absl::StartsWith(rest, "//")) {
    const size_t slash = rest.find('/', 2);
    if (slash == std::string::npos) return {target};
    rest = rest.substr(slash + 1);
  }
  std::string host = rest, port = "443";
  if (absl::StartsWith(rest, "[")) {
    const size_t close = rest.find(']');
    if (close == std::string::npos) return {target};
    host = rest.substr(1, close - 1);
    if (close + 1 < rest.size() && rest[close + 1] == ':') port = rest.substr(close + 2);
  } else if (const size_t colon = rest.rfind(':'); colon != std::string::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0) return {target};
  std::set<std::string> seen;
  std::vector<std::string> out;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    std::string replica;
    if (a->ai_family == AF_INET) {
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr, text, sizeof(text));
      replica = absl::StrCat("ipv4:", text, ":", port);
    } else if (a->ai_family == AF_INET6) {
      ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr, text, sizeof(text));
      replica = absl::StrCat("ipv6:[", text, "]:", port);
    } else {
      continue;
    }
    if (seen.insert(replica).second) out.push_back(replica);
  }
  ::freeaddrinfo(found);
  return out.empty() ? std::vector<std::string>{target} : out;
}

}  // namespace rlhf::runtime
