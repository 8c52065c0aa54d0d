#include "services/reference_logprob/reference_logprob_service_impl.h"

#include "common/runtime/finished_reactors.h"
#include "common/runtime/status_util.h"
#include "common/serving/checkpoint_update.h"
#include "common/serving/model_info.h"

namespace rlhf::reference {

LogProbsRequest LogProbsRequestFromProto(const v1::LogProbsRequest& proto) {
  LogProbsRequest converted;
  converted.sequences.reserve(static_cast<size_t>(proto.sequences_size()));
  for (const v1::PromptResponseIds& seq : proto.sequences()) {
    model::ScoreRequest row;
    row.prompt.assign(seq.prompt_token_ids().begin(), seq.prompt_token_ids().end());
    row.response.assign(seq.response_token_ids().begin(), seq.response_token_ids().end());
    converted.sequences.push_back(std::move(row));
  }
  converted.temperature = proto.has_temperature() ? proto.temperature() : 1.0;
  return converted;
}

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
  LogProbsRequest converted = LogProbsRequestFromProto(*request);
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
  return serving::UpdateFromCheckpoint(context, request, response, engine_->store(), *metrics_, loader_);
}

}  // namespace rlhf::reference
