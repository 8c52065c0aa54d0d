#include "common/runtime/rpc_metrics.h"

#include <atomic>
#include <chrono>
#include <random>

#include "absl/strings/str_format.h"
#include "common/runtime/logging.h"
#include "grpcpp/server_context.h"

namespace rlhf::runtime {

const prometheus::Histogram::BucketBoundaries& RpcLatencyBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
  return *buckets;
}

RpcMetrics::RpcMetrics(prometheus::Registry& registry, std::string service)
    : service_(std::move(service)),
      requests_(prometheus::BuildCounter()
                    .Name("rlhf_rpc_requests_total")
                    .Help("gRPC calls finished, by method and status code")
                    .Register(registry)),
      latency_(prometheus::BuildHistogram()
                   .Name("rlhf_rpc_latency_seconds")
                   .Help("gRPC call latency from arrival to status, by method and status code")
                   .Register(registry)),
      in_flight_(prometheus::BuildGauge()
                     .Name("rlhf_rpc_in_flight")
                     .Help("gRPC calls started and not yet finished")
                     .Register(registry)
                     .Add({{"service", service_}})) {}

void RpcMetrics::RecordStart() { in_flight_.Increment(); }

void RpcMetrics::RecordFinish(const std::string& method, const std::string& code, double seconds) {
  in_flight_.Decrement();
  const prometheus::Labels labels{{"service", service_}, {"method", method}, {"code", code}};
  requests_.Add(labels).Increment();
  latency_.Add(labels, RpcLatencyBuckets()).Observe(seconds);
}

std::string StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

namespace {

std::string NewRequestId() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t process_salt = std::random_device{}();
  return absl::StrFormat("%08x-%08x", static_cast<uint32_t>(process_salt), counter.fetch_add(1) + 1);
}

class RpcObserver final : public grpc::experimental::Interceptor {
 public:
  RpcObserver(grpc::experimental::ServerRpcInfo* info, RpcMetrics* rpc_metrics)
      : info_(info),
        rpc_metrics_(rpc_metrics),
        start_(std::chrono::steady_clock::now()),
        // Copied now: for generic calls the name's storage does not outlive the call's last hook.
        method_(info->method() != nullptr ? info->method() : "") {
    rpc_metrics_->RecordStart();
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      if (info_->server_context() != nullptr) peer_ = info_->server_context()->peer();
      auto* metadata = methods->GetRecvInitialMetadata();
      auto it = metadata->find("x-request-id");
      if (it != metadata->end() && it->second.size() > 0 && it->second.size() <= 128) {
        request_id_.assign(it->second.data(), it->second.size());
      }
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("x-request-id", RequestId());
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      // Recorded before the status leaves, so a caller that has its answer also finds it counted.
      Finish(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

  // A call that ended without sending a status was cancelled by the client or by its deadline.
  ~RpcObserver() override {
    if (!finished_) Finish(grpc::StatusCode::CANCELLED);
  }

 private:
  void Finish(grpc::StatusCode code) {
    finished_ = true;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const std::string code_name = StatusCodeName(code);
    const std::string& method = method_;
    rpc_metrics_->RecordFinish(method, code_name, seconds);
    static const auto logger = Logger("rpc");
    // One line a call; server faults at warn so that they stand out.
    const bool server_fault =
        code == grpc::StatusCode::INTERNAL || code == grpc::StatusCode::UNKNOWN || code == grpc::StatusCode::DATA_LOSS;
    logger->log(server_fault ? spdlog::level::warn : spdlog::level::info,
                "rpc method={} code={} latency_ms={:.3f} peer={} request_id={}", method, code_name, seconds * 1e3,
                peer_, RequestId());
  }

  const std::string& RequestId() {
    if (request_id_.empty()) request_id_ = NewRequestId();
    return request_id_;
  }

  grpc::experimental::ServerRpcInfo* info_;
  RpcMetrics* rpc_metrics_;
  std::chrono::steady_clock::time_point start_;
  std::string method_;
  std::string peer_;
  std::string request_id_;
  bool finished_ = false;
};

}  // namespace

grpc::experimental::Interceptor* RpcObserverFactory::CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) {
  return new RpcObserver(info, rpc_metrics_);
}

}  // namespace rlhf::runtime
