#include "common/runtime/rpc_metrics.h"

#include <atomic>
#include <chrono>
#include <random>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "common/runtime/access_policy.h"
#include "common/runtime/auth.h"
#include "common/runtime/logging.h"
#include "common/runtime/memory_trimmer.h"
#include "common/runtime/request_guard.h"
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

uint64_t RpcMetrics::RecordStart(const std::string& method) {
  in_flight_.Increment();
  std::lock_guard<std::mutex> lock(calls_mu_);
  const uint64_t id = next_call_id_++;
  calls_.emplace(id, std::make_pair(method, std::chrono::steady_clock::now()));
  return id;
}

void RpcMetrics::RecordFinish(uint64_t id, const std::string& method, const std::string& code, double seconds) {
  in_flight_.Decrement();
  {
    std::lock_guard<std::mutex> lock(calls_mu_);
    calls_.erase(id);
  }
  const prometheus::Labels labels{{"service", service_}, {"method", method}, {"code", code}};
  requests_.Add(labels).Increment();
  latency_.Add(labels, RpcLatencyBuckets()).Observe(seconds);
}

void RpcMetrics::RecordRefused(const std::string& method, const std::string& code) {
  requests_.Add({{"service", service_}, {"method", method}, {"code", code}}).Increment();
}

std::vector<std::string> RpcMetrics::InFlightCalls() const {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(calls_mu_);
  std::vector<std::string> out;
  for (const auto& [id, call] : calls_) {
    out.push_back(absl::StrFormat("%s (running %.1f s)", call.first,
                                  std::chrono::duration<double>(now - call.second).count()));
  }
  return out;
}

void RefusedCallLog::Log(absl::string_view method, const std::string& code, absl::string_view message) {
  int64_t suppressed = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    if (now - window_start_ >= std::chrono::seconds(1)) {
      window_start_ = now;
      lines_in_window_ = 0;
    }
    if (lines_in_window_ >= max_lines_per_second_) {
      ++suppressed_;
      ++suppressed_total_;
      return;
    }
    ++lines_in_window_;
    suppressed = suppressed_;
    suppressed_ = 0;
  }
  static const auto logger = Logger("rpc");
  // The method is the caller's bytes: logged escaped, as the metrics label is only ever a known method.
  logger->warn("rpc refused method={} code={} reason=\"{}\" suppressed={}", absl::CHexEscape(method), code,
               absl::CHexEscape(message), suppressed);
}

int64_t RefusedCallLog::suppressed_total() const {
  std::lock_guard<std::mutex> lock(mu_);
  return suppressed_total_;
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
  RpcObserver(grpc::experimental::ServerRpcInfo* info, const RpcObserverOptions& options)
      : info_(info),
        options_(options),
        start_(std::chrono::steady_clock::now()),
        // Copied now: for generic calls the name's storage does not outlive the call's last hook.
        method_(info->method() != nullptr ? info->method() : "") {
    call_id_ = options_.metrics->RecordStart(method_);
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
      TakeNote();
      grpc::StatusCode code = methods->GetSendStatus().error_code();
      // A request the guard refused ends in gRPC's bare UNIMPLEMENTED; send the reason instead.
      if (note_.refusal.has_value() && code == grpc::StatusCode::UNIMPLEMENTED) {
        methods->ModifySendStatus(*note_.refusal);
        code = note_.refusal->error_code();
      }
      // Recorded before the status leaves, so a caller that has its answer also finds it counted.
      Finish(code);
    }
    methods->Proceed();
  }

  // A call that ended without sending a status was cancelled by the client or by its deadline.
  ~RpcObserver() override {
    if (!finished_) {
      TakeNote();
      Finish(grpc::StatusCode::CANCELLED);
    }
  }

 private:
  void TakeNote() {
    if (options_.request_guard != nullptr && !note_taken_ && info_->server_context() != nullptr) {
      note_ = options_.request_guard->Take(info_->server_context());
    }
    note_taken_ = true;
  }

  void Finish(grpc::StatusCode code) {
    finished_ = true;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const std::string code_name = StatusCodeName(code);
    const std::string& method = method_;
    options_.metrics->RecordFinish(call_id_, method, code_name, seconds);
    if (options_.trimmer != nullptr) {
      const MethodRule* rule = options_.policy != nullptr ? options_.policy->Find(method) : nullptr;
      if (note_.request_bytes > 0 || (rule != nullptr && rule->large_requests)) options_.trimmer->Request();
    }
    std::string caller;
    if (options_.authenticator != nullptr && info_->server_context() != nullptr) {
      auto identity = options_.authenticator->Identify(*info_->server_context());
      caller = " caller=" + (identity.ok() ? identity->name : std::string("-"));
    }
    static const auto logger = Logger("rpc");
    // One line a call; server faults at warn so that they stand out.
    const bool server_fault =
        code == grpc::StatusCode::INTERNAL || code == grpc::StatusCode::UNKNOWN || code == grpc::StatusCode::DATA_LOSS;
    logger->log(server_fault ? spdlog::level::warn : spdlog::level::info,
                "rpc method={} code={} latency_ms={:.3f} peer={} request_id={}{}", method, code_name, seconds * 1e3,
                peer_, RequestId(), caller);
  }

  const std::string& RequestId() {
    if (request_id_.empty()) request_id_ = NewRequestId();
    return request_id_;
  }

  grpc::experimental::ServerRpcInfo* info_;
  const RpcObserverOptions& options_;
  std::chrono::steady_clock::time_point start_;
  std::string method_;
  uint64_t call_id_ = 0;
  std::string peer_;
  std::string request_id_;
  RequestGuard::Note note_;
  bool note_taken_ = false;
  bool finished_ = false;
};

}  // namespace

grpc::experimental::Interceptor* RpcObserverFactory::CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) {
  return new RpcObserver(info, options_);
}

}  // namespace rlhf::runtime
