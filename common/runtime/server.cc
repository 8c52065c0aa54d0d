#include "common/runtime/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include "absl/strings/str_cat.h"
#include "common/runtime/logging.h"
#include "prometheus/gauge.h"

#ifndef RLHF_VERSION
#define RLHF_VERSION "dev"
#endif

namespace rlhf::runtime {

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options,
                                                      const std::vector<ServiceEntry>& services,
                                                      std::shared_ptr<prometheus::Registry> registry,
                                                      grpc::CallbackGenericService* generic_service) {
  if (options.name.empty()) return absl::InvalidArgumentError("ServerOptions.name is empty");
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_message_bytes must be positive, got ", options.max_message_bytes));
  }
  if (options.max_request_bytes <= 0 || options.max_request_bytes > options.max_message_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("--max_request_bytes must be in [1, --max_message_bytes=",
                                                   options.max_message_bytes, "], got ", options.max_request_bytes));
  }
  if (options.max_concurrent_streams <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_concurrent_streams must be positive, got ", options.max_concurrent_streams));
  }
  auto logger = Logger("runtime");
  std::unique_ptr<Server> server(new Server());
  server->options_ = options;
  server->registry_ = registry ? std::move(registry) : std::make_shared<prometheus::Registry>();
  server->rpc_metrics_ = std::make_unique<RpcMetrics>(*server->registry_, options.name);
  prometheus::BuildGauge()
      .Name("rlhf_build_info")
      .Help("Always 1; labels name the service binary and its version")
      .Register(*server->registry_)
      .Add({{"service", options.name}, {"version", RLHF_VERSION}})
      .Set(1);

  server->refused_log_ = std::make_unique<RefusedCallLog>();
  MemoryTrimmerOptions trimmer;
  RpcMetrics* metrics = server->rpc_metrics_.get();
  trimmer.idle = [metrics] { return metrics->InFlight() == 0; };
  server->trimmer_ = std::make_unique<MemoryTrimmer>(trimmer);
  server->request_guard_ = std::make_unique<RequestGuard>();
  server->observer_options_ = std::make_unique<RpcObserverOptions>();
  server->observer_options_->metrics = server->rpc_metrics_.get();
  server->observer_options_->request_guard = server->request_guard_.get();
  server->observer_options_->trimmer = server->trimmer_.get();
  server->observer_options_->policy = &server->options_.access;
  server->observer_options_->authenticator = server->options_.security.authenticator.get();

  // Calls refused before any handler: counted (the method label only ever a known method, as the path is the
  // caller's to choose), logged at a bounded rate, and their buffered bytes given back.
  Server* raw = server.get();
  auto on_refused = [raw](absl::string_view method, grpc::StatusCode code, absl::string_view message) {
    const std::string code_name = StatusCodeName(code);
    const bool known = raw->options_.access.Find(method) != nullptr;
    raw->rpc_metrics_->RecordRefused(known ? std::string(method) : "unknown", code_name);
    raw->refused_log_->Log(method, code_name, message);
    raw->trimmer_->Request();
  };
  auto credentials = MakeServerCredentials(server->options_.security, server->options_.access, on_refused);
  if (!credentials.ok()) return credentials.status();

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, *credentials, &server->port_);
  // gRPC's own limit is the largest any method takes; RequestGuard holds the others to --max_request_bytes.
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  const RequestLimits limits{static_cast<size_t>(options.max_request_bytes),
                             static_cast<size_t>(options.max_message_bytes)};
  for (const auto& entry : services) {
    if (entry.service == nullptr) return absl::InvalidArgumentError("ServiceEntry.service is null");
    if (absl::Status s = server->request_guard_->Install(entry.service, server->options_.access, limits); !s.ok()) {
      return s;
    }
    builder.RegisterService(entry.service);
    server->service_names_.push_back(entry.full_name);
  }
  if (generic_service != nullptr) builder.RegisterCallbackGenericService(generic_service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<RpcObserverFactory>(*server->observer_options_));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));

  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen_address,
                                               " (address in use, or not a host:port this machine has)"));
  }
  for (const auto& name : server->service_names_) server->SetServing(name, true);
  server->SetServing("", true);

  if (!options.metrics_address.empty()) {
    auto metrics_server = MetricsHttpServer::Start(options.metrics_address, server->registry_);
    if (!metrics_server.ok()) {
      server->server_->Shutdown();
      return absl::Status(metrics_server.status().code(),
                          absl::StrCat("cannot serve /metrics: ", metrics_server.status().message()));
    }
    server->metrics_server_ = *std::move(metrics_server);
    server->metrics_port_ = server->metrics_server_->port();
  }
  const Authenticator* auth = options.security.authenticator.get();
  logger->info(
      "serving service={} grpc_port={} metrics_port={} tls={} mtls={} auth_tokens={} auth_certificates={} "
      "max_request_bytes={} max_message_bytes={}",
      options.name, server->port_, server->metrics_port_, !options.security.tls_cert_file.empty(),
      !options.security.client_ca_file.empty(), auth != nullptr ? auth->token_count() : 0,
      auth != nullptr && auth->has_certificate_roles(), options.max_request_bytes, options.max_message_bytes);
  return server;
}

Server::~Server() { Shutdown(); }

void Server::SetServing(const std::string& service_full_name, bool serving) {
  if (server_ == nullptr) return;
  server_->GetHealthCheckService()->SetServingStatus(service_full_name, serving);
}

void Server::Shutdown() {
  std::lock_guard<std::mutex> lock(shutdown_mu_);
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  auto logger = Logger("runtime");
  logger->info("draining service={} drain_delay_s={} deadline_s={} in_flight={}", options_.name,
               absl::ToDoubleSeconds(options_.drain_delay), absl::ToDoubleSeconds(options_.shutdown_deadline),
               rpc_metrics_->InFlight());
  // Every service NOT_SERVING, and no later SetServingStatus can undo it.
  server_->GetHealthCheckService()->Shutdown();
  if (options_.drain_delay > absl::ZeroDuration()) absl::SleepFor(options_.drain_delay);
  server_->Shutdown(absl::ToChronoTime(absl::Now() + options_.shutdown_deadline));
  server_->Wait();
  metrics_server_.reset();
  logger->info("stopped service={}", options_.name);
}

void BlockTerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForTerminationSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int signal_number = 0;
  while (sigwait(&set, &signal_number) != 0) {
  }
  return signal_number;
}

}  // namespace rlhf::runtime
