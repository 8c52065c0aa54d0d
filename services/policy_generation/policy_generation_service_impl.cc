#include "services/policy_generation/policy_generation_service_impl.h"

#include "common/runtime/finished_reactors.h"

namespace rlhf::generation {
namespace {

constexpr char kCapability[] = "the policy-generation service (batched KV-cached sampling, weight updates)";

}  // namespace

grpc::ServerUnaryReactor* PolicyGenerationServiceImpl::Generate(grpc::CallbackServerContext* context,
                                                                const v1::GenerateRequest* /*request*/,
                                                                v1::GenerateResponse* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("Generate", kCapability));
}

grpc::ServerReadReactor<v1::WeightsChunk>* PolicyGenerationServiceImpl::UpdateWeights(
    grpc::CallbackServerContext* /*context*/, v1::UpdateWeightsResponse* /*response*/) {
  return runtime::FinishReader<v1::WeightsChunk>(runtime::NotBuiltYet("UpdateWeights", kCapability));
}

grpc::ServerUnaryReactor* PolicyGenerationServiceImpl::UpdateWeightsFromCheckpoint(
    grpc::CallbackServerContext* context, const v1::UpdateWeightsFromCheckpointRequest* /*request*/,
    v1::UpdateWeightsResponse* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("UpdateWeightsFromCheckpoint", kCapability));
}

grpc::ServerUnaryReactor* PolicyGenerationServiceImpl::GetModelInfo(grpc::CallbackServerContext* context,
                                                                    const v1::GetModelInfoRequest* /*request*/,
                                                                    v1::ModelInfo* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("GetModelInfo", kCapability));
}

}  // namespace rlhf::generation
