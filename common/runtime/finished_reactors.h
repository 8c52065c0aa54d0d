// Reactors that answer a call with a final status at once, for the gRPC callback API: used by handlers that
// reject a call before any work (bad request, not ready, not built).
#ifndef RLHF_COMMON_RUNTIME_FINISHED_REACTORS_H_
#define RLHF_COMMON_RUNTIME_FINISHED_REACTORS_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/server_callback.h>

#include <string>

namespace rlhf::runtime {

inline grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context, const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

template <typename Response>
grpc::ServerWriteReactor<Response>* FinishWriter(const grpc::Status& status) {
  class Reactor final : public grpc::ServerWriteReactor<Response> {
   public:
    explicit Reactor(const grpc::Status& status) { this->Finish(status); }
    void OnDone() override { delete this; }
  };
  return new Reactor(status);
}

template <typename Request>
grpc::ServerReadReactor<Request>* FinishReader(const grpc::Status& status) {
  class Reactor final : public grpc::ServerReadReactor<Request> {
   public:
    explicit Reactor(const grpc::Status& status) { this->Finish(status); }
    void OnDone() override { delete this; }
  };
  return new Reactor(status);
}

template <typename Request, typename Response>
grpc::ServerBidiReactor<Request, Response>* FinishBidi(const grpc::Status& status) {
  class Reactor final : public grpc::ServerBidiReactor<Request, Response> {
   public:
    explicit Reactor(const grpc::Status& status) { this->Finish(status); }
    void OnDone() override { delete this; }
  };
  return new Reactor(status);
}

// UNIMPLEMENTED naming the method and the capability that will provide it.
inline grpc::Status NotBuiltYet(const std::string& method, const std::string& capability) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      method + " is not implemented in this release; it arrives with " + capability);
}

}  // namespace rlhf::runtime

#endif  // RLHF_COMMON_RUNTIME_FINISHED_REACTORS_H_
