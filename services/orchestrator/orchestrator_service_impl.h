// rlhf.v1.OrchestratorService: the gRPC edge of the RunManager.
#ifndef RLHF_SERVICES_ORCHESTRATOR_ORCHESTRATOR_SERVICE_IMPL_H_
#define RLHF_SERVICES_ORCHESTRATOR_ORCHESTRATOR_SERVICE_IMPL_H_

#include "rlhf/v1/orchestrator.grpc.pb.h"
#include "services/orchestrator/run_manager.h"

namespace rlhf::orchestrator {

namespace v1 = ::rlhf::v1;

class OrchestratorServiceImpl final : public v1::OrchestratorService::CallbackService {
 public:
  explicit OrchestratorServiceImpl(RunManager* manager) : manager_(manager) {}

  grpc::ServerUnaryReactor* StartRun(grpc::CallbackServerContext* context, const v1::StartRunRequest* request,
                                     v1::Run* response) override;
  grpc::ServerUnaryReactor* GetRun(grpc::CallbackServerContext* context, const v1::GetRunRequest* request,
                                   v1::Run* response) override;
  grpc::ServerUnaryReactor* ListRuns(grpc::CallbackServerContext* context, const v1::ListRunsRequest* request,
                                     v1::ListRunsResponse* response) override;
  grpc::ServerUnaryReactor* CancelRun(grpc::CallbackServerContext* context, const v1::CancelRunRequest* request,
                                      v1::Run* response) override;
  grpc::ServerWriteReactor<v1::RunEvent>* WatchRun(grpc::CallbackServerContext* context,
                                                   const v1::WatchRunRequest* request) override;

 private:
  RunManager* manager_;
};

}  // namespace rlhf::orchestrator

#endif  // RLHF_SERVICES_ORCHESTRATOR_ORCHESTRATOR_SERVICE_IMPL_H_
