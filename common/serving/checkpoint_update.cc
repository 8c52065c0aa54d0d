#include "common/serving/checkpoint_update.h"

#include <optional>

#include "common/runtime/finished_reactors.h"
#include "common/runtime/status_util.h"
#include "common/serving/model_info.h"
#include "google/protobuf/util/time_util.h"

namespace rlhf::serving {

void FillUpdateWeightsResponse(const ModelStore::SwapResult& swap, EngineMetrics& metrics,
                               v1::UpdateWeightsResponse* response) {
  FillModelId(*swap.current, response->mutable_model_id());
  FillModelId(*swap.previous, response->mutable_previous_model_id());
  response->set_total_bytes(swap.total_bytes);
  *response->mutable_load_time() =
      google::protobuf::util::TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(swap.load_time));
  metrics.model_version.Set(static_cast<double>(swap.current->version));
}

grpc::ServerUnaryReactor* UpdateFromCheckpoint(grpc::CallbackServerContext* context,
                                               const v1::UpdateWeightsFromCheckpointRequest* request,
                                               v1::UpdateWeightsResponse* response, ModelStore& store,
                                               EngineMetrics& metrics, runtime::WorkerThread& loader) {
  // Only folders under --path_roots, symlinks resolved: a caller cannot make the server read elsewhere.
  absl::StatusOr<std::string> path = store.path_roots().Resolve(request->path(), "path");
  if (!path.ok()) {
    metrics.weight_updates_refused.Increment();
    return runtime::FinishUnary(context, runtime::ToGrpcStatus(path.status()));
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  loader.Post([reactor, request, response, path = *std::move(path), &store, &metrics] {
    std::optional<int64_t> target;
    if (request->has_target_version()) target = request->target_version();
    auto swap = store.SwapFromDirectory(path, target);
    if (!swap.ok()) {
      metrics.weight_updates_refused.Increment();
      reactor->Finish(runtime::ToGrpcStatus(swap.status()));
      return;
    }
    FillUpdateWeightsResponse(*swap, metrics, response);
    metrics.weight_updates_ok.Increment();
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace rlhf::serving
