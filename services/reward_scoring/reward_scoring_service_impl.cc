#include "services/reward_scoring/reward_scoring_service_impl.h"

#include <deque>
#include <memory>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/runtime/finished_reactors.h"
#include "common/runtime/logging.h"
#include "common/runtime/status_util.h"
#include "common/serving/model_info.h"
#include "common/serving/prompt_codec.h"
#include "common/util/status_macros.h"

namespace rlhf::reward {
namespace {

constexpr char kNoModel[] =
    "no reward model is loaded yet; it serves once a checkpoint is loaded (--model, --watch or ReloadModel)";

// ScoreRequest.request_id goes to the logs: every request at debug level, failures at info.
void LogScore(const std::string& request_id, int items, const absl::Status& status, int64_t version) {
  static const auto logger = runtime::Logger("reward");
  if (status.ok()) {
    logger->debug("score request_id=\"{}\" items={} version={}", runtime::JsonEscape(request_id), items, version);
  } else {
    logger->info("score request_id=\"{}\" items={} code={} error=\"{}\"", runtime::JsonEscape(request_id), items,
                 absl::StatusCodeToString(status.code()), runtime::JsonEscape(std::string(status.message())));
  }
}

}  // namespace

RewardMetrics::RewardMetrics(prometheus::Registry& registry)
    : engine(registry, "reward", "reward-scoring"),
      score(prometheus::BuildHistogram()
                .Name("rlhf_reward_score")
                .Help("Scores served (normalised: SFT demonstrations average 0)")
                .Register(registry)
                .Add({},
                     prometheus::Histogram::BucketBoundaries{-8, -4, -2, -1, -0.5, -0.25, 0, 0.25, 0.5, 1, 2, 4, 8})) {}

RewardScoringServiceImpl::RewardScoringServiceImpl(RewardEngine* engine, RewardMetrics* metrics)
    : engine_(engine), metrics_(metrics) {
  if (const serving::ModelStore* store = engine_->store(); store != nullptr) {
    metrics_->engine.model_version.Set(static_cast<double>(store->Current()->version));
  }
  serving::EngineMetrics* engine_metrics = &metrics_->engine;
  engine_->set_batch_observer([engine_metrics](int64_t rows, int64_t tokens, absl::Duration compute) {
    engine_metrics->ObserveBatch(rows, tokens, compute);
  });
  engine_->set_reload_observer([engine_metrics](const ReloadResult& result) {
    switch (result.outcome) {
      case ReloadOutcome::kReloaded:
        engine_metrics->weight_updates_ok.Increment();
        engine_metrics->model_version.Set(static_cast<double>(result.version));
        break;
      case ReloadOutcome::kRefused:
        engine_metrics->weight_updates_refused.Increment();
        break;
      case ReloadOutcome::kAlreadyCurrent:
        break;
    }
  });
}

absl::StatusOr<RewardRequest> RewardScoringServiceImpl::FromProto(const v1::ScoreRequest& proto,
                                                                  grpc::CallbackServerContext* context) const {
  absl::StatusOr<RewardRequest> request = RewardRequestFromProto(proto, *engine_);
  if (!request.ok()) return request;
  request->deadline = absl::FromChrono(context->deadline());
  request->cancelled = [context] { return context->IsCancelled(); };
  return request;
}

absl::StatusOr<RewardRequest> RewardRequestFromProto(const v1::ScoreRequest& proto, const RewardEngine& engine) {
  constexpr size_t kMaxRequestIdBytes = RewardScoringServiceImpl::kMaxRequestIdBytes;
  const serving::ModelStore* store = engine.store();
  if (store == nullptr) return absl::UnavailableError(kNoModel);
  if (proto.request_id().size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("request_id has ", proto.request_id().size(), " bytes, more than the limit ", kMaxRequestIdBytes));
  }
  // Checked before any text is encoded (the engine checks it again with the rest).
  if (proto.items_size() > engine.options().max_items) {
    return absl::InvalidArgumentError(
        absl::StrCat("items has ", proto.items_size(), " entries, more than the limit ", engine.options().max_items));
  }
  const serving::PromptCodec& codec = store->prompt_codec();
  const std::optional<int64_t> eos = engine.eos_token_id();
  RewardRequest request;
  request.items.reserve(static_cast<size_t>(proto.items_size()));
  for (int i = 0; i < proto.items_size(); ++i) {
    const v1::ScoreItem& item = proto.items(i);
    const std::string field = absl::StrCat("items[", i, "]");
    ScorePair pair;
    ASSIGN_OR_RETURN(pair.prompt, serving::EncodePrompt(codec, item.prompt(), field + ".prompt"));
    if (pair.prompt.empty()) {
      const v1::TextOrTokens::ContentCase kind = item.prompt().content_case();
      return absl::InvalidArgumentError(absl::StrCat(field, ".prompt",
                                                     kind == v1::TextOrTokens::kText       ? ".text"
                                                     : kind == v1::TextOrTokens::kMessages ? ".messages"
                                                                                           : ".token_ids",
                                                     " is empty"));
    }
    ASSIGN_OR_RETURN(pair.response, serving::EncodeResponse(codec, item.prompt(), item.response(), eos,
                                                            field + ".response"));
    request.items.push_back(std::move(pair));
  }
  if (proto.has_min_model_version()) request.min_model_version = proto.min_model_version();
  return request;
}

void RewardScoringServiceImpl::FillResponse(const RewardResult& result, v1::ScoreResponse* response) const {
  response->mutable_model_id()->set_name(result.model_name);
  response->mutable_model_id()->set_version(result.model_version);
  response->mutable_scores()->Add(result.scores.begin(), result.scores.end());
  response->set_normalization_bias(result.normalization_bias);
  for (float score : result.scores) metrics_->score.Observe(score);
}

grpc::ServerUnaryReactor* RewardScoringServiceImpl::Score(grpc::CallbackServerContext* context,
                                                          const v1::ScoreRequest* request,
                                                          v1::ScoreResponse* response) {
  absl::StatusOr<RewardRequest> converted = FromProto(*request, context);
  if (!converted.ok()) {
    LogScore(request->request_id(), request->items_size(), converted.status(), 0);
    return runtime::FinishUnary(context, runtime::ToGrpcStatus(converted.status()));
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  engine_->Submit(*std::move(converted), [this, reactor, request, response](absl::StatusOr<RewardResult> result) {
    metrics_->engine.queue_depth.Set(static_cast<double>(engine_->queue_depth()));
    LogScore(request->request_id(), request->items_size(), result.status(), result.ok() ? result->model_version : 0);
    if (!result.ok()) {
      reactor->Finish(runtime::ToGrpcStatus(result.status()));
      return;
    }
    FillResponse(*result, response);
    response->set_request_id(request->request_id());
    reactor->Finish(grpc::Status::OK);
  });
  metrics_->engine.queue_depth.Set(static_cast<double>(engine_->queue_depth()));
  return reactor;
}

// ScoreStream: every request message gets a response slot, in order; requests are scored concurrently (up to
// kMaxStreamInFlight per stream) and written in order as the front slot completes. Per-message failures (bad
// input, stale version, full queue) go in the slot's `error`; the stream fails only when the call's deadline
// passes or it is cancelled. Never blocks: reads, writes and engine completions each take the lock briefly.
class RewardScoringServiceImpl::ScoreStreamReactor final
    : public grpc::ServerBidiReactor<v1::ScoreRequest, v1::ScoreResponse> {
 public:
  ScoreStreamReactor(RewardScoringServiceImpl* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client finished sending, or the call ended (deadline, cancellation)
      std::lock_guard<std::mutex> lock(mu_);
      reads_done_ = true;
      if (context_->IsCancelled()) {
        FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled or its deadline passed"));
      }
      MaybeFinishLocked();
      return;
    }
    auto slot = std::make_shared<Slot>();
    slot->response.set_request_id(request_.request_id());
    slot->items = request_.items_size();
    absl::StatusOr<RewardRequest> converted = service_->FromProto(request_, context_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_) return;
      pending_.push_back(slot);
      if (converted.ok()) ++engine_jobs_;
    }
    if (converted.ok()) {
      // The callback may run inline (e.g. a full queue): the lock is not held here.
      service_->engine_->Submit(*std::move(converted), [this, slot](absl::StatusOr<RewardResult> result) {
        OnScored(slot, std::move(result));
      });
    } else {
      std::lock_guard<std::mutex> lock(mu_);
      SetError(*slot, converted.status());
      TryWriteLocked();
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    if (pending_.size() < kMaxStreamInFlight) {
      StartRead(&request_);
    } else {
      read_paused_ = true;
    }
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!pending_.empty()) pending_.pop_front();
    if (!ok) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client stopped reading responses"));
      return;
    }
    if (read_paused_ && !finished_ && pending_.size() < kMaxStreamInFlight) {
      read_paused_ = false;
      StartRead(&request_);
    }
    TryWriteLocked();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled"));
  }

  void OnDone() override {
    bool last;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      last = engine_jobs_ == 0;
    }
    if (last) delete this;  // else the last engine completion deletes it
  }

 private:
  struct Slot {
    v1::ScoreResponse response;
    int items = 0;
    bool ready = false;
  };

  void OnScored(const std::shared_ptr<Slot>& slot, absl::StatusOr<RewardResult> result) {
    bool last = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      --engine_jobs_;
      if (result.ok()) {
        LogScore(slot->response.request_id(), slot->items, absl::OkStatus(), result->model_version);
        service_->FillResponse(*result, &slot->response);
        slot->ready = true;
      } else if (result.status().code() == absl::StatusCode::kDeadlineExceeded ||
                 result.status().code() == absl::StatusCode::kCancelled) {
        FinishLocked(runtime::ToGrpcStatus(result.status()));  // the caller is gone: the stream ends
      } else {
        SetError(*slot, result.status());
      }
      service_->metrics_->engine.queue_depth.Set(static_cast<double>(service_->engine_->queue_depth()));
      TryWriteLocked();
      last = done_ && engine_jobs_ == 0;
    }
    if (last) delete this;
  }

  static void SetError(Slot& slot, const absl::Status& status) {
    LogScore(slot.response.request_id(), slot.items, status, 0);
    const grpc::Status mapped = runtime::ToGrpcStatus(status);
    slot.response.mutable_error()->set_code(static_cast<int32_t>(mapped.error_code()));
    slot.response.mutable_error()->set_message(mapped.error_message());
    slot.ready = true;
  }

  // Writes the front slot when it is ready and no write is in flight; finishes once everything is written.
  void TryWriteLocked() {
    if (finished_ || writing_) return;
    if (!pending_.empty() && pending_.front()->ready) {
      writing_ = true;
      StartWrite(&pending_.front()->response);
      return;
    }
    MaybeFinishLocked();
  }

  void MaybeFinishLocked() {
    if (reads_done_ && pending_.empty() && !writing_) FinishLocked(grpc::Status::OK);
  }

  void FinishLocked(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  RewardScoringServiceImpl* service_;
  grpc::CallbackServerContext* context_;
  v1::ScoreRequest request_;  // owned by the read in flight, or by OnReadDone

  std::mutex mu_;
  std::deque<std::shared_ptr<Slot>> pending_;  // in request order; the front is written next
  int engine_jobs_ = 0;                        // submitted, completion not yet run
  bool writing_ = false;
  bool read_paused_ = false;
  bool reads_done_ = false;
  bool finished_ = false;
  bool done_ = false;
};

grpc::ServerBidiReactor<v1::ScoreRequest, v1::ScoreResponse>* RewardScoringServiceImpl::ScoreStream(
    grpc::CallbackServerContext* context) {
  return new ScoreStreamReactor(this, context);
}

grpc::ServerUnaryReactor* RewardScoringServiceImpl::GetModelInfo(grpc::CallbackServerContext* context,
                                                                 const v1::GetModelInfoRequest* /*request*/,
                                                                 v1::ModelInfo* response) {
  const serving::ModelStore* store = engine_->store();
  if (store == nullptr) return runtime::FinishUnary(context, grpc::Status(grpc::StatusCode::UNAVAILABLE, kNoModel));
  // The bias must be the one of the version described: retry if a reload lands in between (rare).
  for (int attempt = 0; attempt < 3; ++attempt) {
    const std::shared_ptr<const serving::ServedModel> served = store->Current();
    response->Clear();
    serving::FillModelInfo(*store, v1::MODEL_ROLE_REWARD, response);
    response->set_reward_normalization_bias(NormalizationBias(*served));
    if (response->model_id().version() == served->version) break;
  }
  return runtime::FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* RewardScoringServiceImpl::ReloadModel(grpc::CallbackServerContext* context,
                                                                const v1::ReloadModelRequest* request,
                                                                v1::ReloadModelResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // The load runs on the engine's loader thread, never on a gRPC thread.
  engine_->Reload(request->checkpoint_path(), [reactor, response](absl::StatusOr<ReloadResult> result) {
    if (!result.ok()) {
      reactor->Finish(runtime::ToGrpcStatus(result.status()));
      return;
    }
    switch (result->outcome) {
      case ReloadOutcome::kReloaded:
        response->set_outcome(v1::RELOAD_OUTCOME_RELOADED);
        break;
      case ReloadOutcome::kAlreadyCurrent:
        response->set_outcome(v1::RELOAD_OUTCOME_ALREADY_CURRENT);
        break;
      case ReloadOutcome::kRefused:
        response->set_outcome(v1::RELOAD_OUTCOME_REFUSED);
        break;
    }
    response->mutable_model_id()->set_name(runtime::Utf8Safe(result->model_name));
    response->mutable_model_id()->set_version(result->version);
    response->mutable_previous_model_id()->set_name(runtime::Utf8Safe(result->model_name));
    response->mutable_previous_model_id()->set_version(result->previous_version);
    // Paths and messages may quote bytes of a broken checkpoint: proto strings must be valid UTF-8.
    response->set_checkpoint_path(runtime::Utf8Safe(result->checkpoint_path));
    response->set_normalization_bias(result->normalization_bias);
    response->set_message(runtime::Utf8Safe(result->message));
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace rlhf::reward
