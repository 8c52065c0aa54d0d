// rlhf.v1.ReferenceLogprobService: gRPC handlers. Until its engine lands, every method answers UNIMPLEMENTED naming
// the reference-logprob service (batched log-probs under the frozen SFT model).
#ifndef RLHF_SERVICES_REFERENCE_LOGPROB_REFERENCE_LOGPROB_SERVICE_IMPL_H_
#define RLHF_SERVICES_REFERENCE_LOGPROB_REFERENCE_LOGPROB_SERVICE_IMPL_H_

#include "rlhf/v1/reference.grpc.pb.h"

namespace rlhf::reference {

namespace v1 = ::rlhf::v1;

class ReferenceLogprobServiceImpl final : public v1::ReferenceLogprobService::CallbackService {
 public:
  grpc::ServerUnaryReactor* LogProbs(grpc::CallbackServerContext* context, const v1::LogProbsRequest* request,
                                     v1::LogProbsResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context, const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
};

}  // namespace rlhf::reference

#endif  // RLHF_SERVICES_REFERENCE_LOGPROB_REFERENCE_LOGPROB_SERVICE_IMPL_H_
