// rlhf.v1.ReferenceLogprobService: validates, converts protobuf <-> engine types, calls the engine, records
// metrics. The engine (reference_engine.h) owns the frozen model and the batching.
#ifndef RLHF_SERVICES_REFERENCE_LOGPROB_REFERENCE_LOGPROB_SERVICE_IMPL_H_
#define RLHF_SERVICES_REFERENCE_LOGPROB_REFERENCE_LOGPROB_SERVICE_IMPL_H_

#include "common/serving/engine_metrics.h"
#include "common/runtime/worker_thread.h"
#include "rlhf/v1/reference.grpc.pb.h"
#include "services/reference_logprob/reference_engine.h"

namespace rlhf::reference {

namespace v1 = ::rlhf::v1;

// LogProbs' request as the engine takes it (the engine validates it in Submit); the deadline and cancellation are
// left for the caller. A plain function, so that the fuzz target (tests/fuzz/reference_logprob_fuzzer.cc) runs what
// the handler runs.
LogProbsRequest LogProbsRequestFromProto(const v1::LogProbsRequest& proto);

class ReferenceLogprobServiceImpl final : public v1::ReferenceLogprobService::CallbackService {
 public:
  // `engine` and `metrics` must outlive the service.
  ReferenceLogprobServiceImpl(ReferenceEngine* engine, serving::EngineMetrics* metrics);

  grpc::ServerUnaryReactor* LogProbs(grpc::CallbackServerContext* context, const v1::LogProbsRequest* request,
                                     v1::LogProbsResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context, const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  // Loads on the service's loader thread, never on a gRPC thread.
  grpc::ServerUnaryReactor* UpdateWeightsFromCheckpoint(grpc::CallbackServerContext* context,
                                                        const v1::UpdateWeightsFromCheckpointRequest* request,
                                                        v1::UpdateWeightsResponse* response) override;

 private:
  ReferenceEngine* engine_;
  serving::EngineMetrics* metrics_;
  runtime::WorkerThread loader_;
};

}  // namespace rlhf::reference

#endif  // RLHF_SERVICES_REFERENCE_LOGPROB_REFERENCE_LOGPROB_SERVICE_IMPL_H_
