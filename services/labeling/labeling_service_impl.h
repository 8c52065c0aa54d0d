// rlhf.v1.LabelingService: gRPC handlers. Until its engine lands, every method answers UNIMPLEMENTED naming
// the labeling service (human comparison queue, in the orchestrator's labeler work).
#ifndef RLHF_SERVICES_LABELING_LABELING_SERVICE_IMPL_H_
#define RLHF_SERVICES_LABELING_LABELING_SERVICE_IMPL_H_

#include "rlhf/v1/labeling.grpc.pb.h"

namespace rlhf::labeling {

namespace v1 = ::rlhf::v1;

class LabelingServiceImpl final : public v1::LabelingService::CallbackService {
 public:
  grpc::ServerUnaryReactor* NextTask(grpc::CallbackServerContext* context, const v1::NextTaskRequest* request,
                                     v1::LabelingTask* response) override;
  grpc::ServerUnaryReactor* SubmitRanking(grpc::CallbackServerContext* context, const v1::SubmitRankingRequest* request,
                                          v1::SubmitRankingResponse* response) override;
  grpc::ServerUnaryReactor* GetQueueStats(grpc::CallbackServerContext* context, const v1::GetQueueStatsRequest* request,
                                          v1::QueueStats* response) override;
};

}  // namespace rlhf::labeling

#endif  // RLHF_SERVICES_LABELING_LABELING_SERVICE_IMPL_H_
