// UpdateWeightsFromCheckpoint, as every model service answers it: swap the store to a checkpoint folder on the
// service's loader thread, count the outcome and answer with the old and new identities.
#ifndef RLHF_COMMON_SERVING_CHECKPOINT_UPDATE_H_
#define RLHF_COMMON_SERVING_CHECKPOINT_UPDATE_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/server_callback.h>

#include "common/runtime/worker_thread.h"
#include "common/serving/engine_metrics.h"
#include "common/serving/model_store.h"
#include "rlhf/v1/generation.pb.h"

namespace rlhf::serving {

// Fills an UpdateWeightsResponse from a swap and sets the metrics' model version.
void FillUpdateWeightsResponse(const ModelStore::SwapResult& swap, EngineMetrics& metrics,
                               v1::UpdateWeightsResponse* response);

// The whole handler: INVALID_ARGUMENT for an empty path, else the swap runs on `loader` (never on a gRPC thread) and
// finishes the returned reactor with the swap's status.
grpc::ServerUnaryReactor* UpdateFromCheckpoint(grpc::CallbackServerContext* context,
                                               const v1::UpdateWeightsFromCheckpointRequest* request,
                                               v1::UpdateWeightsResponse* response, ModelStore& store,
                                               EngineMetrics& metrics, runtime::WorkerThread& loader);

}  // namespace rlhf::serving

#endif  // RLHF_COMMON_SERVING_CHECKPOINT_UPDATE_H_
