#include "services/policy_generation/policy_generation_service_impl.h"

#include "absl/strings/str_cat.h"
#include "common/runtime/finished_reactors.h"
#include "common/runtime/status_util.h"
#include "common/serving/checkpoint_update.h"
#include "common/serving/model_info.h"
#include "common/serving/weights_transfer.h"
#include "common/util/status_macros.h"
#include "google/protobuf/util/time_util.h"

namespace rlhf::generation {
namespace {

using google::protobuf::util::TimeUtil;

constexpr int64_t kDefaultMaxNewTokens = 64;

v1::FinishReason ToProto(model::FinishReason reason, bool stop_string) {
  switch (reason) {
    case model::FinishReason::kEos:
      return v1::FINISH_REASON_STOP_TOKEN;
    case model::FinishReason::kStopSequence:
      return stop_string ? v1::FINISH_REASON_STOP_STRING : v1::FINISH_REASON_STOP_TOKEN;
    case model::FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case model::FinishReason::kAbandoned:  // never answered: the caller is gone
      break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

}  // namespace

absl::StatusOr<GenerationRequest> GenerationRequestFromProto(const v1::GenerateRequest& proto,
                                                             const serving::ModelStore& store) {
  GenerationRequest request;
  for (int i = 0; i < proto.prompts_size(); ++i) {
    ASSIGN_OR_RETURN(std::vector<int64_t> ids,
                     serving::EncodePrompt(store.prompt_codec(), proto.prompts(i), absl::StrCat("prompts[", i, "]")));
    request.prompts.push_back(std::move(ids));
  }
  request.num_samples = proto.num_samples() == 0 ? 1 : proto.num_samples();
  const v1::SamplingParams& sampling = proto.sampling();
  request.temperature = sampling.has_temperature() ? sampling.temperature() : 1.0;
  request.top_k = sampling.top_k();
  request.top_p = sampling.top_p() == 0 ? 1.0 : sampling.top_p();
  request.max_new_tokens = sampling.max_new_tokens() == 0 ? kDefaultMaxNewTokens : sampling.max_new_tokens();
  request.stop_strings.assign(sampling.stop().begin(), sampling.stop().end());
  request.stop_token_ids.assign(sampling.stop_token_ids().begin(), sampling.stop_token_ids().end());
  request.ignore_eos = sampling.ignore_eos();
  if (sampling.has_seed()) request.seed = sampling.seed();
  if (proto.has_min_model_version()) request.min_model_version = proto.min_model_version();
  return request;
}

absl::StatusOr<serving::ModelStore::SwapResult> SwapFromWeightsStream(serving::WeightsAssembler& assembler,
                                                                      serving::ModelStore& store) {
  absl::StatusOr<std::string> file = assembler.Finish();
  if (!file.ok()) return file.status();
  const v1::WeightsHeader& header = assembler.header();
  std::optional<int64_t> target;
  if (header.has_target_version()) target = header.target_version();
  std::map<std::string, std::string> metadata;
  if (header.has_model_id()) {
    metadata["source_model_name"] = header.model_id().name();
    metadata["source_model_version"] = absl::StrCat(header.model_id().version());
  }
  return store.SwapFromSafetensors(*std::move(file), "UpdateWeights stream", target, metadata);
}

PolicyGenerationServiceImpl::PolicyGenerationServiceImpl(GenerationEngine* engine, serving::EngineMetrics* metrics,
                                                         int64_t max_weights_bytes)
    : engine_(engine), metrics_(metrics), max_weights_bytes_(max_weights_bytes) {
  metrics_->model_version.Set(static_cast<double>(engine_->store().Current()->version));
  engine_->set_batch_observer([metrics](int64_t rows, int64_t tokens, absl::Duration compute) {
    metrics->ObserveBatch(rows, tokens, compute);
  });
}

grpc::ServerUnaryReactor* PolicyGenerationServiceImpl::Generate(grpc::CallbackServerContext* context,
                                                                const v1::GenerateRequest* request,
                                                                v1::GenerateResponse* response) {
  absl::StatusOr<GenerationRequest> converted = GenerationRequestFromProto(*request, engine_->store());
  if (!converted.ok()) return runtime::FinishUnary(context, runtime::ToGrpcStatus(converted.status()));
  converted->deadline = absl::FromChrono(context->deadline());
  converted->cancelled = [context] { return context->IsCancelled(); };
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::vector<std::vector<int64_t>> prompt_ids = converted->prompts;
  serving::EngineMetrics* metrics = metrics_;
  GenerationEngine* engine = engine_;
  engine_->Submit(*std::move(converted), [reactor, response, prompt_ids = std::move(prompt_ids), metrics,
                                          engine](absl::StatusOr<GenerationResult> result) {
    metrics->queue_depth.Set(static_cast<double>(engine->queue_depth()));
    if (!result.ok()) {
      reactor->Finish(runtime::ToGrpcStatus(result.status()));
      return;
    }
    response->mutable_model_id()->set_name(result->model_name);
    response->mutable_model_id()->set_version(result->model_version);
    for (size_t p = 0; p < result->samples.size(); ++p) {
      v1::PromptCompletions* completions = response->add_results();
      completions->mutable_prompt_token_ids()->Add(prompt_ids[p].begin(), prompt_ids[p].end());
      for (GeneratedSample& sample : result->samples[p]) {
        v1::Completion* completion = completions->add_completions();
        completion->mutable_token_ids()->Add(sample.tokens.begin(), sample.tokens.end());
        completion->mutable_logprobs()->Add(sample.logprobs.begin(), sample.logprobs.end());
        completion->set_text(std::move(sample.text));
        completion->set_finish_reason(ToProto(sample.finish_reason, !sample.stop_string.empty()));
        completion->set_stop_string(std::move(sample.stop_string));
      }
    }
    v1::GenerationStats* stats = response->mutable_stats();
    stats->set_prompt_tokens(result->prompt_tokens);
    stats->set_generated_tokens(result->generated_tokens);
    *stats->mutable_queue_time() = TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(result->queue_time));
    *stats->mutable_compute_time() = TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(result->compute_time));
    reactor->Finish(grpc::Status::OK);
  });
  metrics_->queue_depth.Set(static_cast<double>(engine_->queue_depth()));
  return reactor;
}

void PolicyGenerationServiceImpl::FillSwapResponse(const serving::ModelStore::SwapResult& swap,
                                                   v1::UpdateWeightsResponse* response) {
  serving::FillUpdateWeightsResponse(swap, *metrics_, response);
}

// Reads the weights stream into a WeightsAssembler; at its end, swaps on the loader thread.
class PolicyGenerationServiceImpl::UpdateWeightsReactor final : public grpc::ServerReadReactor<v1::WeightsChunk> {
 public:
  UpdateWeightsReactor(PolicyGenerationServiceImpl* service, v1::UpdateWeightsResponse* response)
      : service_(service), response_(response), assembler_(service->max_weights_bytes_) {
    StartRead(&chunk_);
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      if (absl::Status status = assembler_.Add(chunk_); !status.ok()) {
        Fail(status);
        return;
      }
      chunk_.Clear();
      StartRead(&chunk_);
      return;
    }
    // End of the client's stream: check and swap, off the gRPC thread.
    service_->loader_.Post([this] {
      auto swap = SwapFromWeightsStream(assembler_, service_->engine_->store());
      if (!swap.ok()) {
        Fail(swap.status());
        return;
      }
      service_->FillSwapResponse(*swap, response_);
      const v1::WeightsHeader& header = assembler_.header();
      if (header.has_model_id()) *response_->mutable_source_model_id() = header.model_id();
      service_->metrics_->weight_updates_ok.Increment();
      Finish(grpc::Status::OK);
    });
  }

  void OnDone() override { delete this; }

 private:
  void Fail(const absl::Status& status) {
    service_->metrics_->weight_updates_refused.Increment();
    Finish(runtime::ToGrpcStatus(status));
  }

  PolicyGenerationServiceImpl* service_;
  v1::UpdateWeightsResponse* response_;
  serving::WeightsAssembler assembler_;
  v1::WeightsChunk chunk_;
};

grpc::ServerReadReactor<v1::WeightsChunk>* PolicyGenerationServiceImpl::UpdateWeights(
    grpc::CallbackServerContext* /*context*/, v1::UpdateWeightsResponse* response) {
  return new UpdateWeightsReactor(this, response);
}

grpc::ServerUnaryReactor* PolicyGenerationServiceImpl::UpdateWeightsFromCheckpoint(
    grpc::CallbackServerContext* context, const v1::UpdateWeightsFromCheckpointRequest* request,
    v1::UpdateWeightsResponse* response) {
  return serving::UpdateFromCheckpoint(context, request, response, engine_->store(), *metrics_, loader_);
}

grpc::ServerUnaryReactor* PolicyGenerationServiceImpl::GetModelInfo(grpc::CallbackServerContext* context,
                                                                    const v1::GetModelInfoRequest* /*request*/,
                                                                    v1::ModelInfo* response) {
  serving::FillModelInfo(engine_->store(), v1::MODEL_ROLE_POLICY, response);
  return runtime::FinishUnary(context, grpc::Status::OK);
}

}  // namespace rlhf::generation
