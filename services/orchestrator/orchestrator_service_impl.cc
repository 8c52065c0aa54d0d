#include "services/orchestrator/orchestrator_service_impl.h"

#include "common/runtime/finished_reactors.h"

namespace rlhf::orchestrator {
namespace {

constexpr char kCapability[] = "the orchestrator (the SFT -> RM -> PPO loop, runs that survive crashes)";

}  // namespace

grpc::ServerUnaryReactor* OrchestratorServiceImpl::StartRun(grpc::CallbackServerContext* context,
                                                            const v1::StartRunRequest* /*request*/,
                                                            v1::Run* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("StartRun", kCapability));
}

grpc::ServerUnaryReactor* OrchestratorServiceImpl::GetRun(grpc::CallbackServerContext* context,
                                                          const v1::GetRunRequest* /*request*/, v1::Run* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("GetRun", kCapability));
}

grpc::ServerUnaryReactor* OrchestratorServiceImpl::ListRuns(grpc::CallbackServerContext* context,
                                                            const v1::ListRunsRequest* /*request*/,
                                                            v1::ListRunsResponse* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("ListRuns", kCapability));
}

grpc::ServerUnaryReactor* OrchestratorServiceImpl::CancelRun(grpc::CallbackServerContext* context,
                                                             const v1::CancelRunRequest* /*request*/,
                                                             v1::Run* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("CancelRun", kCapability));
}

grpc::ServerWriteReactor<v1::RunEvent>* OrchestratorServiceImpl::WatchRun(grpc::CallbackServerContext* /*context*/,
                                                                          const v1::WatchRunRequest* /*request*/) {
  return runtime::FinishWriter<v1::RunEvent>(runtime::NotBuiltYet("WatchRun", kCapability));
}

}  // namespace rlhf::orchestrator
