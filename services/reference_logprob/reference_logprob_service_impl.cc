#include "services/reference_logprob/reference_logprob_service_impl.h"

#include "common/runtime/finished_reactors.h"

namespace rlhf::reference {
namespace {

constexpr char kCapability[] = "the reference-logprob service (batched log-probs under the frozen SFT model)";

}  // namespace

grpc::ServerUnaryReactor* ReferenceLogprobServiceImpl::LogProbs(grpc::CallbackServerContext* context,
                                                                const v1::LogProbsRequest* /*request*/,
                                                                v1::LogProbsResponse* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("LogProbs", kCapability));
}

grpc::ServerUnaryReactor* ReferenceLogprobServiceImpl::GetModelInfo(grpc::CallbackServerContext* context,
                                                                    const v1::GetModelInfoRequest* /*request*/,
                                                                    v1::ModelInfo* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("GetModelInfo", kCapability));
}

}  // namespace rlhf::reference
