// rlhf.v1.PolicyGenerationService: gRPC handlers. Until its engine lands, every method answers UNIMPLEMENTED naming
// the policy-generation service (batched KV-cached sampling, weight updates).
#ifndef RLHF_SERVICES_POLICY_GENERATION_POLICY_GENERATION_SERVICE_IMPL_H_
#define RLHF_SERVICES_POLICY_GENERATION_POLICY_GENERATION_SERVICE_IMPL_H_

#include "rlhf/v1/generation.grpc.pb.h"

namespace rlhf::generation {

namespace v1 = ::rlhf::v1;

class PolicyGenerationServiceImpl final : public v1::PolicyGenerationService::CallbackService {
 public:
  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context, const v1::GenerateRequest* request,
                                     v1::GenerateResponse* response) override;
  grpc::ServerReadReactor<v1::WeightsChunk>* UpdateWeights(grpc::CallbackServerContext* context,
                                                           v1::UpdateWeightsResponse* response) override;
  grpc::ServerUnaryReactor* UpdateWeightsFromCheckpoint(grpc::CallbackServerContext* context,
                                                        const v1::UpdateWeightsFromCheckpointRequest* request,
                                                        v1::UpdateWeightsResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context, const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
};

}  // namespace rlhf::generation

#endif  // RLHF_SERVICES_POLICY_GENERATION_POLICY_GENERATION_SERVICE_IMPL_H_
