#include "common/runtime/request_guard.h"

#include <google/protobuf/descriptor.h>
#include <grpc/byte_buffer.h>
#include <grpcpp/impl/rpc_service_method.h>

#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace rlhf::runtime {
namespace {

using grpc::internal::MethodHandler;
using grpc::internal::RpcMethod;
using grpc::internal::RpcServiceMethod;

// grpc::Service keeps its methods in a private member and offers no way to put a handler in front of gRPC's without
// destroying gRPC's. An explicit template instantiation may name a private member (access checks do not apply to
// it, [temp.spec]), which is how MethodsOf reaches the list; a gRPC that renames or retypes the member fails to
// compile here instead of misbehaving.
using MethodList = std::vector<std::unique_ptr<RpcServiceMethod>>;
MethodList& MethodsOf(grpc::Service& service);
template <MethodList grpc::Service::*Member>
struct MethodListAccess {
  friend MethodList& MethodsOf(grpc::Service& service) { return service.*Member; }
};
template struct MethodListAccess<&grpc::Service::methods_>;

// The request type's full name of a method path "/pkg.Service/Method", from the generated descriptors.
std::string RequestTypeName(const std::string& path) {
  std::string name = path.size() > 1 ? path.substr(1) : path;
  absl::StrReplaceAll({{"/", "."}}, &name);
  const google::protobuf::MethodDescriptor* method =
      google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(name);
  return method != nullptr ? method->input_type()->full_name() : "request message";
}

// What the guard passes from Deserialize to RunHandler of the same call (arena-allocated, trivially destructible).
struct CallData {
  void* inner = nullptr;  // the wrapped handler's own handler_data
  size_t request_bytes = 0;
};

// A method handler in front of gRPC's: measures the request, frees an oversize one unparsed, and records the status
// the call should end with when the request is refused.
class GuardedHandler final : public MethodHandler {
 public:
  GuardedHandler(std::unique_ptr<RpcServiceMethod> original, size_t limit, const char* limit_flag,
                 RequestGuard* guard)
      : original_(std::move(original)),
        method_(original_->name()),
        request_type_(RequestTypeName(method_)),
        limit_(limit),
        limit_flag_(limit_flag),
        guard_(guard) {}

  void Retarget(size_t limit, const char* limit_flag, RequestGuard* guard) {
    limit_ = limit;
    limit_flag_ = limit_flag;
    guard_ = guard;
  }

  void* Deserialize(grpc_call* call, grpc_byte_buffer* req, grpc::Status* status, void** handler_data) override {
    auto* data = new (grpc_call_arena_alloc(call, sizeof(CallData))) CallData();
    *handler_data = data;
    data->request_bytes = req != nullptr ? grpc_byte_buffer_length(req) : 0;
    if (data->request_bytes > limit_) {
      // Freed before parsing; the handler below still sets up its call state, from an empty request.
      grpc_byte_buffer_destroy(req);
      void* request = inner()->Deserialize(call, grpc_raw_byte_buffer_create(nullptr, 0), status, &data->inner);
      *status = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                             absl::StrCat("request of ", data->request_bytes, " bytes exceeds the ", limit_,
                                          "-byte limit of ", method_, " (", limit_flag_, ")"));
      return request;
    }
    const bool sent = req != nullptr;
    void* request = inner()->Deserialize(call, req, status, &data->inner);
    if (!status->ok()) {
      *status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                             sent ? absl::StrCat("request is not a valid ", request_type_, " (", data->request_bytes,
                                                 " bytes that do not parse as one)")
                                  : absl::StrCat("no request message was sent to ", method_));
    }
    return request;
  }

  void RunHandler(const HandlerParameter& param) override {
    const auto* data = static_cast<const CallData*>(param.internal_data);
    RequestGuard::Note note;
    if (!param.status.ok()) note.refusal = param.status;
    if (data != nullptr && data->request_bytes >= RequestGuard::kNotedRequestBytes) {
      note.request_bytes = data->request_bytes;
    }
    if (note.refusal.has_value() || note.request_bytes > 0) guard_->Record(param.server_context, std::move(note));
    inner()->RunHandler(HandlerParameter(param.call, param.server_context, param.request, param.status,
                                         data != nullptr ? data->inner : nullptr, param.call_requester));
  }

 private:
  MethodHandler* inner() const { return original_->handler(); }

  const std::unique_ptr<RpcServiceMethod> original_;  // owns gRPC's handler
  const std::string method_;
  const std::string request_type_;
  size_t limit_;
  const char* limit_flag_;
  RequestGuard* guard_;
};

}  // namespace

absl::Status RequestGuard::Install(grpc::Service* service, const AccessPolicy& policy, RequestLimits limits) {
  if (service == nullptr) return absl::InvalidArgumentError("RequestGuard::Install: service is null");
  for (std::unique_ptr<RpcServiceMethod>& method : MethodsOf(*service)) {
    if (method == nullptr || method->handler() == nullptr ||
        method->api_type() != RpcServiceMethod::ApiType::CALL_BACK ||
        (method->method_type() != RpcMethod::NORMAL_RPC && method->method_type() != RpcMethod::SERVER_STREAMING)) {
      continue;
    }
    const MethodRule* rule = policy.Find(method->name());
    const bool large = rule != nullptr && rule->large_requests;
    const size_t limit = large ? limits.large_bytes : limits.small_bytes;
    const char* flag = large ? "--max_message_bytes" : "--max_request_bytes";
    if (auto* guarded = dynamic_cast<GuardedHandler*>(method->handler())) {
      guarded->Retarget(limit, flag, this);
      continue;
    }
    const char* name = method->name();
    const RpcMethod::RpcType type = method->method_type();
    auto* handler = new GuardedHandler(std::move(method), limit, flag, this);
    method = std::make_unique<RpcServiceMethod>(name, type, handler);
    method->SetServerApiType(RpcServiceMethod::ApiType::CALL_BACK);
  }
  return absl::OkStatus();
}

void RequestGuard::Record(const grpc::ServerContextBase* context, Note note) {
  std::lock_guard<std::mutex> lock(mu_);
  notes_[context] = std::move(note);
}

RequestGuard::Note RequestGuard::Take(const grpc::ServerContextBase* context) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = notes_.find(context);
  if (it == notes_.end()) return {};
  Note note = std::move(it->second);
  notes_.erase(it);
  return note;
}

}  // namespace rlhf::runtime
