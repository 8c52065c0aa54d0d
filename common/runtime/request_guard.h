// Per-method request limits and parse errors, applied between gRPC receiving a request and the handler seeing it.
//
// gRPC 1.51 has one receive limit per server. RequestGuard wraps each unary and server-streaming method of a
// registered service so that its request is measured before it is parsed: above the method's limit it is freed
// unparsed and the call ends with RESOURCE_EXHAUSTED naming the limit and its flag; a request that does not parse
// ends with INVALID_ARGUMENT ("request is not a valid rlhf.v1.ScoreRequest") instead of gRPC's bare UNIMPLEMENTED.
// The messages of client streams (UpdateWeights, ScoreStream) are bounded by the server-wide limit only.
//
// gRPC's callback handlers end a call whose request failed with UNIMPLEMENTED and no message; the guard records
// the real status here, keyed by the call's ServerContext, and the RPC interceptor (rpc_metrics.h) sends it instead.
#ifndef RLHF_COMMON_RUNTIME_REQUEST_GUARD_H_
#define RLHF_COMMON_RUNTIME_REQUEST_GUARD_H_

#include <grpcpp/impl/service_type.h>
#include <grpcpp/server_context.h>

#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "absl/status/status.h"
#include "common/runtime/access_policy.h"

namespace rlhf::runtime {

struct RequestLimits {
  size_t small_bytes = 4 << 20;  // --max_request_bytes: methods without large_requests in the policy
  size_t large_bytes = 64 << 20;  // --max_message_bytes: methods with large_requests
};

class RequestGuard {
 public:
  // What the guard learnt about a call's request.
  struct Note {
    std::optional<grpc::Status> refusal;  // the status to end the call with instead of gRPC's UNIMPLEMENTED
    size_t request_bytes = 0;             // its size on the wire, when at least kNotedRequestBytes
  };
  // Requests at least this large are noted (the memory they held is worth giving back after the call).
  static constexpr size_t kNotedRequestBytes = 1 << 20;

  // Wraps every callback unary and server-streaming method of `service` (not yet registered with a server): its
  // limit is `limits.large_bytes` when `policy` marks the method large_requests, else `limits.small_bytes`. A
  // service wrapped before (by an earlier server) is pointed at this guard. The guard must outlive the calls.
  absl::Status Install(grpc::Service* service, const AccessPolicy& policy, RequestLimits limits);

  // Called from the wrapped handlers.
  void Record(const grpc::ServerContextBase* context, Note note);
  // Takes (removes) what was recorded for `context`; an empty Note when nothing was.
  Note Take(const grpc::ServerContextBase* context);

 private:
  std::mutex mu_;
  std::unordered_map<const grpc::ServerContextBase*, Note> notes_;
};

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_REQUEST_GUARD_H_
