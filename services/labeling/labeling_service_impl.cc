#include "services/labeling/labeling_service_impl.h"

#include "common/runtime/finished_reactors.h"

namespace rlhf::labeling {
namespace {

constexpr char kCapability[] = "the labeling service (human comparison queue, in the orchestrator's labeler work)";

}  // namespace

grpc::ServerUnaryReactor* LabelingServiceImpl::NextTask(grpc::CallbackServerContext* context,
                                                        const v1::NextTaskRequest* /*request*/,
                                                        v1::LabelingTask* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("NextTask", kCapability));
}

grpc::ServerUnaryReactor* LabelingServiceImpl::SubmitRanking(grpc::CallbackServerContext* context,
                                                             const v1::SubmitRankingRequest* /*request*/,
                                                             v1::SubmitRankingResponse* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("SubmitRanking", kCapability));
}

grpc::ServerUnaryReactor* LabelingServiceImpl::GetQueueStats(grpc::CallbackServerContext* context,
                                                             const v1::GetQueueStatsRequest* /*request*/,
                                                             v1::QueueStats* /*response*/) {
  return runtime::FinishUnary(context, runtime::NotBuiltYet("GetQueueStats", kCapability));
}

}  // namespace rlhf::labeling
