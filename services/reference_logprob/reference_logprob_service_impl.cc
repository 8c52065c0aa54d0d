#include "services/reference_logprob/reference_logprob_service_impl.h"

#include "common/runtime/finished_reactors.h"
#include "common/runtime/status_util.h"
#include "common/serving/model_info.h"
#include "google/protobuf/util/time_util.h"

namespace rlhf::reference {

ReferenceLogprobServiceImpl::ReferenceLogprobServiceImpl(ReferenceEngine* engine, serving::EngineMetrics* metrics)
    : engine_(engine), metrics_(metrics) {
  metrics_->model_version.Set(static_cast<double>(engine_->store().Current()->version));
  engine_->set_batch_observer([metrics](int64_t rows, int64_t tokens, absl::Duration compute) {
    metrics->ObserveBatch(rows, tokens, compute);
  });
}

grpc::ServerUnaryReactor* ReferenceLogprobServiceImpl::LogProbs(grpc::CallbackServerContext* context,
                                                                const v1::LogProbsRequest* request,
                                                                v1::LogProbsResponse* response) {
  LogProbsRequest converted;
  converted.sequences.reserve(static_cast<size_t>(request->sequences_size()));
  for (const v1::PromptResponseIds& seq : request->sequences()) {
    model::ScoreRequest row;
    row.prompt.assign(seq.prompt_token_ids().begin(), seq.prompt_token_ids().end());
    row.response.assign(seq.response_token_ids().begin(), seq.response_token_ids().end());
    converted.sequences.push_back(std::move(row));
  }
  converted.temperature = request->has_temperature() ? request->temperature() : 1.0;
  converted.deadline = absl::FromChrono(context->deadline());
  converted.cancelled = [context] { return context->IsCancelled(); };
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  ReferenceEngine* engine = engine_;
  serving::EngineMetrics* metrics = metrics_;
  engine_->Submit(std::move(converted), [reactor, response, engine, metrics](absl::StatusOr<LogProbsResult> result) {
    metrics->queue_depth.Set(static_cast<double>(engine->queue_depth()));
    if (!result.ok()) {
      reactor->Finish(runtime::ToGrpcStatus(result.status()));
      return;
    }
    response->mutable_model_id()->set_name(result->model_name);
    response->mutable_model_id()->set_version(result->model_version);
    for (const std::vector<float>& logprobs : result->logprobs) {
      v1::ResponseLogProbs* entry = response->add_results();
      entry->mutable_logprobs()->Add(logprobs.begin(), logprobs.end());
      double sum = 0;
      for (float lp : logprobs) sum += lp;
      entry->set_sum_logprob(sum);
    }
    reactor->Finish(grpc::Status::OK);
  });
  metrics_->queue_depth.Set(static_cast<double>(engine_->queue_depth()));
  return reactor;
}

grpc::ServerUnaryReactor* ReferenceLogprobServiceImpl::GetModelInfo(grpc::CallbackServerContext* context,
                                                                    const v1::GetModelInfoRequest* /*request*/,
                                                                    v1::ModelInfo* response) {
  serving::FillModelInfo(engine_->store(), v1::MODEL_ROLE_REFERENCE, response);
  return runtime::FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* ReferenceLogprobServiceImpl::UpdateWeightsFromCheckpoint(
    grpc::CallbackServerContext* context, const v1::UpdateWeightsFromCheckpointRequest* request,
    v1::UpdateWeightsResponse* response) {
  if (request->path().empty()) {
    return runtime::FinishUnary(context, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "path is empty"));
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  loader_.Post([this, reactor, request, response] {
    std::optional<int64_t> target;
    if (request->has_target_version()) target = request->target_version();
    auto swap = engine_->store().SwapFromDirectory(request->path(), target);
    if (!swap.ok()) {
      metrics_->weight_updates_refused.Increment();
      reactor->Finish(runtime::ToGrpcStatus(swap.status()));
      return;
    }
    serving::FillModelId(*swap->current, response->mutable_model_id());
    serving::FillModelId(*swap->previous, response->mutable_previous_model_id());
    response->set_total_bytes(swap->total_bytes);
    *response->mutable_load_time() = google::protobuf::util::TimeUtil::NanosecondsToDuration(
        absl::ToInt64Nanoseconds(swap->load_time));
    metrics_->model_version.Set(static_cast<double>(swap->current->version));
    metrics_->weight_updates_ok.Increment();
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace rlhf::reference
