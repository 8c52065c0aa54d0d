#include "services/ppo_trainer/ppo_trainer_service_impl.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/runtime/finished_reactors.h"
#include "common/runtime/queued_writer.h"
#include "common/runtime/status_util.h"
#include "common/serving/model_info.h"
#include "common/serving/prompt_codec.h"
#include "common/serving/weights_transfer.h"
#include "common/util/status_macros.h"
#include "google/protobuf/util/time_util.h"
#include "rlhf/v1/reward.grpc.pb.h"

namespace rlhf::trainer {
namespace {

using google::protobuf::util::TimeUtil;

TextOrIds FromProto(const v1::TextOrTokens& value) {
  TextOrIds out;
  out.is_text = value.content_case() != v1::TextOrTokens::kTokenIds;
  out.text = value.text();
  out.ids.assign(value.token_ids().ids().begin(), value.token_ids().ids().end());
  for (const v1::ChatMessage& m : value.messages().messages()) out.messages.push_back({m.role(), m.content()});
  return out;
}

absl::Status CheckTextOrTokens(const v1::TextOrTokens& value, const std::string& field) {
  if (value.content_case() == v1::TextOrTokens::CONTENT_NOT_SET) {
    return absl::InvalidArgumentError(field + " has neither text, token_ids nor messages");
  }
  if (value.content_case() == v1::TextOrTokens::kMessages) {
    return serving::ChatMessagesFromProto(value.messages(), field).status();
  }
  return absl::OkStatus();
}

BadRecords ToBadRecords(v1::BadRecordPolicy policy) {
  return policy == v1::BAD_RECORD_POLICY_SKIP ? BadRecords::kSkip : BadRecords::kFail;
}

void FillModelId(const ModelIdentity& id, v1::ModelId* out) {
  out->set_name(id.name);
  out->set_version(id.version);
}

v1::TrainingEvent ToEvent(v1::Stage stage, const training::TrainingProgress& p) {
  v1::TrainingEvent event;
  event.set_stage(stage);
  event.set_epoch(p.epoch);
  event.set_step(p.step);
  event.set_total_steps(p.total_steps);
  for (const auto& [k, v] : p.metrics) (*event.mutable_metrics())[k] = v;
  event.set_checkpoint_path(p.checkpoint_path);
  *event.mutable_time() = TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now()));
  return event;
}

v1::TrainingEvent ToFinalEvent(v1::Stage stage, const StageSummary& s, int64_t steps) {
  v1::TrainingEvent event;
  event.set_stage(stage);
  event.set_epoch(s.selected_epoch);
  event.set_step(steps);
  event.set_total_steps(steps);
  event.set_done(true);
  for (const auto& [k, v] : s.metrics) (*event.mutable_metrics())[k] = v;
  event.set_checkpoint_path(s.checkpoint_path);
  v1::TrainingSummary* summary = event.mutable_summary();
  FillModelId(s.model_id, summary->mutable_model_id());
  summary->set_checkpoint_path(s.checkpoint_path);
  summary->set_selected_epoch(s.selected_epoch);
  for (const auto& [k, v] : s.metrics) (*summary->mutable_metrics())[k] = v;
  *summary->mutable_elapsed() = TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(s.elapsed));
  summary->set_train_examples(s.train_examples);
  summary->set_validation_examples(s.validation_examples);
  summary->set_records_skipped(s.records_skipped);
  summary->set_normalization_bias(static_cast<float>(s.normalization_bias));
  *event.mutable_time() = TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now()));
  return event;
}

model::SamplingOptions ToSampling(const v1::SamplingParams& p) {
  model::SamplingOptions o;
  o.temperature = p.has_temperature() ? p.temperature() : 1.0;
  o.top_k = p.top_k();
  o.top_p = p.top_p() > 0 ? p.top_p() : 1.0;
  o.max_new_tokens = p.max_new_tokens() > 0 ? p.max_new_tokens() : 64;
  o.eos_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  o.seed = p.has_seed() ? p.seed() : 0;
  return o;
}

// Scores (prompt, response) token ids with a RewardScoringService; for SFT's REWARD_SCORE selection.
std::function<absl::StatusOr<std::vector<float>>(const std::vector<std::vector<int64_t>>&,
                                                 const std::vector<std::vector<int64_t>>&)>
RewardScorer(runtime::ClientOptions client) {
  return [client](const std::vector<std::vector<int64_t>>& prompts,
                  const std::vector<std::vector<int64_t>>& responses) -> absl::StatusOr<std::vector<float>> {
    ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, runtime::MakeChannel(client));
    auto stub = v1::RewardScoringService::NewStub(channel);
    std::vector<float> scores;
    constexpr size_t kPerCall = 64;
    for (size_t start = 0; start < prompts.size(); start += kPerCall) {
      v1::ScoreRequest request;
      for (size_t i = start; i < std::min(prompts.size(), start + kPerCall); ++i) {
        v1::ScoreItem* item = request.add_items();
        item->mutable_prompt()->mutable_token_ids()->mutable_ids()->Add(prompts[i].begin(), prompts[i].end());
        item->mutable_response()->mutable_token_ids()->mutable_ids()->Add(responses[i].begin(), responses[i].end());
      }
      v1::ScoreResponse response;
      auto context = runtime::ContextWithTimeout(absl::Seconds(120));
      grpc::Status status = stub->Score(context.get(), request, &response);
      if (!status.ok()) {
        absl::Status s = runtime::FromGrpcStatus(status);
        return absl::Status(s.code(), absl::StrCat("reward service ", client.target, ": ", s.message()));
      }
      scores.insert(scores.end(), response.scores().begin(), response.scores().end());
    }
    return scores;
  };
}

}  // namespace

absl::StatusOr<training::OptimizerOptions> ToOptimizerOptions(const v1::OptimizerConfig& c, double default_lr,
                                                              const std::string& field) {
  training::OptimizerOptions o;
  o.learning_rate = c.learning_rate() > 0 ? c.learning_rate() : default_lr;
  if (c.learning_rate() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".learning_rate must be >= 0, got ", c.learning_rate()));
  }
  o.warmup_steps = c.warmup_steps();
  o.min_lr_ratio = c.has_min_lr_ratio() ? c.min_lr_ratio() : 0.1;
  o.weight_decay = c.weight_decay();
  o.beta1 = c.has_adam_beta1() ? c.adam_beta1() : 0.9;
  o.beta2 = c.has_adam_beta2() ? c.adam_beta2() : 0.95;
  o.epsilon = c.adam_epsilon() > 0 ? c.adam_epsilon() : 1e-8;
  o.max_grad_norm = c.max_grad_norm();
  if (c.grad_accumulation_steps() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".grad_accumulation_steps must be >= 0"));
  }
  RETURN_IF_ERROR(training::ValidateOptimizerOptions(o, field));
  return o;
}

absl::StatusOr<training::PpoOptions> ToPpoOptions(const v1::PpoHyperParams& h, const StageDefaults& defaults) {
  training::PpoOptions o;
  const v1::KlControllerConfig& kl = h.kl();
  const double beta = kl.has_beta() ? kl.beta() : 0.02;
  if (!(beta >= 0)) return absl::InvalidArgumentError(absl::StrCat("hparams.kl.beta must be >= 0, got ", beta));
  if (kl.kind() == v1::KL_CONTROLLER_KIND_ADAPTIVE) {
    if (!(kl.target_kl() > 0)) {
      return absl::InvalidArgumentError("hparams.kl.target_kl must be > 0 for the adaptive controller");
    }
    if (!(beta > 0)) return absl::InvalidArgumentError("hparams.kl.beta must be > 0 for the adaptive controller");
    o.kl.mode = rl::KlControlMode::kAdaptive;
    o.kl.adaptive.init_beta = beta;
    o.kl.adaptive.target_kl = kl.target_kl();
    o.kl.adaptive.horizon = kl.horizon() > 0 ? static_cast<double>(kl.horizon()) : 10000.0;
  } else {
    o.kl.mode = rl::KlControlMode::kFixed;
    o.kl.beta = beta;
  }
  switch (h.kl_estimator()) {
    case v1::KL_ESTIMATOR_K2: o.kl_estimator = rl::KlEstimator::kK2; break;
    case v1::KL_ESTIMATOR_K3: o.kl_estimator = rl::KlEstimator::kK3; break;
    default: o.kl_estimator = rl::KlEstimator::kK1;
  }
  o.gamma = h.has_gamma() ? h.gamma() : 1.0;
  o.gae_lambda = h.has_gae_lambda() ? h.gae_lambda() : 0.95;
  o.clip_range = h.has_clip_range() ? h.clip_range() : 0.2;
  o.value_clip_range = h.has_value_clip_range() ? h.value_clip_range() : 0.2;
  o.value_loss_coef = h.has_value_loss_coef() ? h.value_loss_coef() : 0.1;
  o.ppo_epochs = h.ppo_epochs() > 0 ? h.ppo_epochs() : 1;
  o.minibatch_size = h.minibatch_size() > 0 ? h.minibatch_size() : 64;
  if (h.ppo_epochs() < 0) return absl::InvalidArgumentError("hparams.ppo_epochs must be >= 0");
  if (h.minibatch_size() < 0) return absl::InvalidArgumentError("hparams.minibatch_size must be >= 0");
  o.whiten_advantages = h.has_whiten_advantages() ? h.whiten_advantages() : true;
  o.sampling_temperature = h.has_sampling_temperature() ? h.sampling_temperature() : 1.0;
  o.no_stop_token_penalty = h.no_stop_token_penalty();
  ASSIGN_OR_RETURN(o.policy_optimizer, ToOptimizerOptions(h.policy_optimizer(), defaults.ppo_policy_learning_rate,
                                                          "hparams.policy_optimizer"));
  ASSIGN_OR_RETURN(o.value_optimizer, ToOptimizerOptions(h.value_optimizer(), defaults.ppo_value_learning_rate,
                                                         "hparams.value_optimizer"));
  // PPO runs open-ended: no cosine decay unless min_lr_ratio is set... which needs a length; keep it constant.
  o.policy_optimizer.total_steps = 0;
  o.value_optimizer.total_steps = 0;
  o.policy_ema_decay = h.policy_ema_decay();
  o.seed = h.seed();
  RETURN_IF_ERROR(training::ValidatePpoOptions(o));
  return o;
}

absl::StatusOr<SftJob> SftJobFromProto(const v1::TrainSftRequest& request, const StageDefaults& defaults) {
  SftJob job;
  switch (request.data_case()) {
    case v1::TrainSftRequest::kDataPath:
      if (request.data_path().empty()) {
        return absl::InvalidArgumentError("data_path is empty");
      }
      job.data_path = request.data_path();
      break;
    case v1::TrainSftRequest::kInlineData:
      if (request.inline_data().examples().empty()) {
        return absl::InvalidArgumentError("inline_data.examples is empty");
      }
      for (int i = 0; i < request.inline_data().examples_size(); ++i) {
        const v1::SftExample& e = request.inline_data().examples(i);
        const std::string field = absl::StrCat("inline_data.examples[", i, "]");
        absl::Status s = CheckTextOrTokens(e.prompt(), field + ".prompt");
        if (s.ok()) s = CheckTextOrTokens(e.response(), field + ".response");
        if (!s.ok()) return s;
        job.inline_examples.emplace_back(FromProto(e.prompt()), FromProto(e.response()));
      }
      break;
    default:
      return absl::InvalidArgumentError("set data_path or inline_data");
  }
  if (!(request.validation_fraction() >= 0 && request.validation_fraction() <= 0.5)) {
    return absl::InvalidArgumentError(
        absl::StrCat("validation_fraction must be in [0, 0.5], got ", request.validation_fraction()));
  }
  job.validation_fraction = request.validation_fraction();
  job.validation_path = request.validation_path();
  const v1::SftHyperParams& h = request.hparams();
  job.options.epochs = h.epochs() > 0 ? h.epochs() : 16;
  job.options.batch_size = h.batch_size() > 0 ? h.batch_size() : defaults.sft_batch_size;
  job.options.grad_accumulation_steps =
      h.optimizer().grad_accumulation_steps() > 0 ? h.optimizer().grad_accumulation_steps() : 1;
  auto optimizer = ToOptimizerOptions(h.optimizer(), defaults.sft_learning_rate, "hparams.optimizer");
  if (!optimizer.ok()) return optimizer.status();
  job.options.optimizer = *optimizer;
  job.options.dropout = h.has_dropout() ? h.dropout() : 0.2;
  if (!(job.options.dropout >= 0 && job.options.dropout < 1)) {
    return absl::InvalidArgumentError("hparams.dropout must be in [0, 1)");
  }
  if (h.epochs() < 0 || h.batch_size() < 0 || h.max_steps() < 0 || h.eval_interval_steps() < 0) {
    return absl::InvalidArgumentError("hparams.epochs, batch_size, max_steps and eval_interval_steps must be >= 0");
  }
  job.options.seed = h.seed();
  job.options.max_steps = h.max_steps();
  job.options.eval_interval_steps = h.eval_interval_steps();
  switch (request.selection().criterion()) {
    case v1::CHECKPOINT_CRITERION_VALIDATION_LOSS:
      job.options.selection = training::EpochSelection::kValidationLoss;
      break;
    case v1::CHECKPOINT_CRITERION_REWARD_SCORE: {
      if (request.selection().reward_service_address().empty()) {
        return absl::InvalidArgumentError("selection.reward_service_address is required for REWARD_SCORE");
      }
      job.options.selection = training::EpochSelection::kScore;
      runtime::ClientOptions client = defaults.reward_client;
      client.target = request.selection().reward_service_address();
      job.score_responses = RewardScorer(client);
      job.score_prompts = request.selection().num_prompts();
      job.score_sampling = ToSampling(request.selection().sampling());
      break;
    }
    default:
      job.options.selection = training::EpochSelection::kLast;
  }
  job.output_dir = request.output_dir();
  job.init_model_path = request.init_model_path();
  job.bad_records = ToBadRecords(request.bad_record_policy());
  return job;
}

absl::StatusOr<RewardJob> RewardJobFromProto(const v1::TrainRewardModelRequest& request,
                                             const StageDefaults& defaults) {
  RewardJob job;
  switch (request.data_case()) {
    case v1::TrainRewardModelRequest::kComparisonsPath:
      if (request.comparisons_path().empty()) {
        return absl::InvalidArgumentError("comparisons_path is empty");
      }
      job.comparisons_path = request.comparisons_path();
      break;
    case v1::TrainRewardModelRequest::kInlineComparisons:
      for (int i = 0; i < request.inline_comparisons().comparisons_size(); ++i) {
        const v1::Comparison& c = request.inline_comparisons().comparisons(i);
        const std::string field = absl::StrCat("inline_comparisons.comparisons[", i, "]");
        ComparisonItem item;
        absl::Status s = CheckTextOrTokens(c.prompt(), field + ".prompt");
        if (!s.ok()) return s;
        item.prompt = FromProto(c.prompt());
        const bool pair = c.has_chosen() || c.has_rejected();
        if (pair == (c.ranked_size() > 0)) {
          return absl::InvalidArgumentError(field + " must use exactly one form: ranked, or chosen + rejected");
        }
        if (pair) {
          s = CheckTextOrTokens(c.chosen(), field + ".chosen");
          if (s.ok()) s = CheckTextOrTokens(c.rejected(), field + ".rejected");
          if (!s.ok()) return s;
          item.responses = {{FromProto(c.chosen()), 1}, {FromProto(c.rejected()), 2}};
        } else {
          for (int j = 0; j < c.ranked_size(); ++j) {
            s = CheckTextOrTokens(c.ranked(j).response(), absl::StrCat(field, ".ranked[", j, "].response"));
            if (!s.ok()) return s;
            item.responses.push_back({FromProto(c.ranked(j).response()), c.ranked(j).rank()});
          }
        }
        job.inline_comparisons.push_back(std::move(item));
      }
      if (job.inline_comparisons.empty()) {
        return absl::InvalidArgumentError("inline_comparisons.comparisons is empty");
      }
      break;
    default:
      return absl::InvalidArgumentError("set comparisons_path or inline_comparisons");
  }
  const v1::RewardModelHyperParams& h = request.hparams();
  if (h.epochs() < 0 || h.prompts_per_batch() < 0 || h.eval_interval_steps() < 0) {
    return absl::InvalidArgumentError("hparams.epochs, prompts_per_batch and eval_interval_steps must be >= 0");
  }
  job.options.epochs = h.epochs() > 0 ? h.epochs() : 1;
  job.options.prompts_per_batch = h.prompts_per_batch() > 0 ? h.prompts_per_batch() : 64;
  auto optimizer = ToOptimizerOptions(h.optimizer(), defaults.reward_learning_rate, "hparams.optimizer");
  if (!optimizer.ok()) return optimizer.status();
  job.options.optimizer = *optimizer;
  job.options.seed = h.seed();
  job.options.eval_interval_steps = h.eval_interval_steps();
  if (!(request.validation_fraction() >= 0 && request.validation_fraction() <= 0.5)) {
    return absl::InvalidArgumentError(
        absl::StrCat("validation_fraction must be in [0, 0.5], got ", request.validation_fraction()));
  }
  job.validation_fraction = request.validation_fraction();
  job.init_model_path = request.init_model_path();
  job.normalization_demonstrations_path = request.normalization_demonstrations_path();
  job.bad_records = ToBadRecords(request.bad_record_policy());
  job.output_dir = request.output_dir();
  job.init_value_model = request.init_value_model();
  return job;
}

absl::StatusOr<PpoJob> PpoJobFromProto(const v1::PpoStepRequest& request, const StageDefaults& defaults) {
  PpoJob job;
  auto options = ToPpoOptions(request.hparams(), defaults);
  if (!options.ok()) return options.status();
  job.options = *options;
  job.rollouts.reserve(static_cast<size_t>(request.rollouts_size()));
  for (const v1::Rollout& r : request.rollouts()) {
    training::Rollout out;
    out.prompt.assign(r.prompt_token_ids().begin(), r.prompt_token_ids().end());
    out.response.assign(r.response_token_ids().begin(), r.response_token_ids().end());
    out.sampling_logprobs.assign(r.sampling_logprobs().begin(), r.sampling_logprobs().end());
    out.reference_logprobs.assign(r.reference_logprobs().begin(), r.reference_logprobs().end());
    out.score = r.reward_score();
    out.ended_with_stop = r.ended_with_stop_token();
    job.rollouts.push_back(std::move(out));
  }
  for (int i = 0; i < request.ptx().examples_size(); ++i) {
    absl::Status s = CheckTextOrTokens(request.ptx().examples(i), absl::StrCat("ptx.examples[", i, "]"));
    if (!s.ok()) return s;
    job.ptx_examples.push_back(FromProto(request.ptx().examples(i)));
  }
  job.gamma_ptx = request.ptx().gamma_ptx();
  if (request.has_expected_policy_version()) job.expected_policy_version = request.expected_policy_version();
  return job;
}

PpoTrainerServiceImpl::PpoTrainerServiceImpl(TrainerEngine* engine, TrainerMetrics* metrics, StageDefaults defaults)
    : engine_(engine),
      metrics_(metrics),
      defaults_(std::move(defaults)),
      worker_(std::make_unique<runtime::WorkerThread>()) {
  if (auto info = engine_->GetPolicyInfo(); info.ok()) metrics_->model_version.Set(static_cast<double>(info->id.version));
}

PpoTrainerServiceImpl::~PpoTrainerServiceImpl() {
  Shutdown();
  worker_.reset();  // finishes the running operation (which stops at its next step) and joins
}

void PpoTrainerServiceImpl::Shutdown() { shutting_down_ = true; }

grpc::ServerWriteReactor<v1::TrainingEvent>* PpoTrainerServiceImpl::TrainSft(grpc::CallbackServerContext* /*context*/,
                                                                             const v1::TrainSftRequest* request) {
  absl::StatusOr<SftJob> converted = SftJobFromProto(*request, defaults_);
  if (!converted.ok()) return runtime::FinishWriter<v1::TrainingEvent>(runtime::ToGrpcStatus(converted.status()));
  SftJob job = *std::move(converted);

  auto lease = engine_->Acquire("TrainSft");
  if (!lease.ok()) return runtime::FinishWriter<v1::TrainingEvent>(runtime::ToGrpcStatus(lease.status()));
  auto [reactor, writer] = runtime::QueuedWriter<v1::TrainingEvent>::Create();
  auto shared_lease = std::make_shared<OperationLease>(*std::move(lease));
  worker_->Post([this, job = std::move(job), writer = writer, shared_lease]() mutable {
    auto last = absl::Now();
    job.keep_going = [&]() -> absl::Status {
      if (shutting_down_) return absl::UnavailableError("the trainer is shutting down");
      if (writer.Cancelled()) return absl::CancelledError("the caller cancelled TrainSft");
      return absl::OkStatus();
    };
    auto progress = [&](const training::TrainingProgress& p) -> absl::Status {
      RETURN_IF_ERROR(job.keep_going());
      if (p.metrics.count("train/loss")) {
        metrics_->Steps("sft").Increment();
        metrics_->Loss("sft").Set(p.metrics.at("train/loss"));
        metrics_->StepSeconds("sft").Observe(absl::ToDoubleSeconds(absl::Now() - last));
        last = absl::Now();
      }
      if (!p.checkpoint_path.empty()) {
        metrics_->last_checkpoint_timestamp.Set(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
      }
      writer.Push(ToEvent(v1::STAGE_SFT, p));
      return absl::OkStatus();
    };
    absl::StatusOr<StageSummary> summary = engine_->TrainSft(job, progress);
    shared_lease.reset();
    if (!summary.ok()) {
      writer.Close(runtime::ToGrpcStatus(summary.status()));
      return;
    }
    metrics_->model_version.Set(static_cast<double>(summary->model_id.version));
    writer.Push(ToFinalEvent(v1::STAGE_SFT, *summary, 0));
    writer.Close(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerWriteReactor<v1::TrainingEvent>* PpoTrainerServiceImpl::TrainRewardModel(
    grpc::CallbackServerContext* /*context*/, const v1::TrainRewardModelRequest* request) {
  absl::StatusOr<RewardJob> converted = RewardJobFromProto(*request, defaults_);
  if (!converted.ok()) return runtime::FinishWriter<v1::TrainingEvent>(runtime::ToGrpcStatus(converted.status()));
  RewardJob job = *std::move(converted);

  auto lease = engine_->Acquire("TrainRewardModel");
  if (!lease.ok()) return runtime::FinishWriter<v1::TrainingEvent>(runtime::ToGrpcStatus(lease.status()));
  auto [reactor, writer] = runtime::QueuedWriter<v1::TrainingEvent>::Create();
  auto shared_lease = std::make_shared<OperationLease>(*std::move(lease));
  worker_->Post([this, job = std::move(job), writer = writer, shared_lease]() mutable {
    auto last = absl::Now();
    int64_t steps = 0;
    job.keep_going = [&]() -> absl::Status {
      if (shutting_down_) return absl::UnavailableError("the trainer is shutting down");
      if (writer.Cancelled()) return absl::CancelledError("the caller cancelled TrainRewardModel");
      return absl::OkStatus();
    };
    auto progress = [&](const training::TrainingProgress& p) -> absl::Status {
      RETURN_IF_ERROR(job.keep_going());
      metrics_->Steps("reward_model").Increment();
      if (p.metrics.count("train/loss")) metrics_->Loss("reward_model").Set(p.metrics.at("train/loss"));
      metrics_->StepSeconds("reward_model").Observe(absl::ToDoubleSeconds(absl::Now() - last));
      last = absl::Now();
      steps = p.step;
      writer.Push(ToEvent(v1::STAGE_REWARD_MODEL, p));
      return absl::OkStatus();
    };
    absl::StatusOr<StageSummary> summary = engine_->TrainRewardModel(job, progress);
    shared_lease.reset();
    if (!summary.ok()) {
      writer.Close(runtime::ToGrpcStatus(summary.status()));
      return;
    }
    metrics_->last_checkpoint_timestamp.Set(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
    writer.Push(ToFinalEvent(v1::STAGE_REWARD_MODEL, *summary, steps));
    writer.Close(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* PpoTrainerServiceImpl::PpoStep(grpc::CallbackServerContext* context,
                                                         const v1::PpoStepRequest* request,
                                                         v1::PpoStepResponse* response) {
  absl::StatusOr<PpoJob> converted = PpoJobFromProto(*request, defaults_);
  if (!converted.ok()) return runtime::FinishUnary(context, runtime::ToGrpcStatus(converted.status()));
  PpoJob job = *std::move(converted);
  auto lease = engine_->Acquire("PpoStep");
  if (!lease.ok()) return runtime::FinishUnary(context, runtime::ToGrpcStatus(lease.status()));
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto shared_lease = std::make_shared<OperationLease>(*std::move(lease));
  worker_->Post([this, job = std::move(job), reactor, response, shared_lease]() mutable {
    absl::StatusOr<PpoOutcome> outcome = shutting_down_ ? absl::UnavailableError("the trainer is shutting down")
                                                        : engine_->PpoStep(job);
    shared_lease.reset();
    if (!outcome.ok()) {
      reactor->Finish(runtime::ToGrpcStatus(outcome.status()));
      return;
    }
    const training::PpoStepStats& s = outcome->stats;
    v1::PpoStats* stats = response->mutable_stats();
    stats->set_step(s.step);
    stats->set_policy_loss(s.policy_loss);
    stats->set_value_loss(s.value_loss);
    stats->set_ptx_loss(s.ptx_loss);
    stats->set_mean_reward(s.mean_reward);
    stats->set_mean_total_reward(s.mean_total_reward);
    stats->set_mean_kl(s.mean_kl);
    stats->set_kl_estimator(s.kl_estimator);
    stats->set_clip_fraction(s.clip_fraction);
    stats->set_value_clip_fraction(s.value_clip_fraction);
    stats->set_approx_kl(s.approx_kl);
    stats->set_entropy(s.entropy);
    stats->set_explained_variance(s.explained_variance);
    stats->set_advantage_mean(s.advantage_mean);
    stats->set_advantage_std(s.advantage_std);
    stats->set_learning_rate(s.learning_rate);
    stats->set_kl_beta(s.kl_beta);
    stats->set_next_kl_beta(s.next_kl_beta);
    stats->set_tokens_per_second(s.tokens_per_second);
    stats->set_mean_response_length(s.mean_response_length);
    stats->set_stop_token_fraction(s.stop_token_fraction);
    stats->set_num_rollouts(s.num_rollouts);
    *stats->mutable_elapsed() = TimeUtil::NanosecondsToDuration(static_cast<int64_t>(s.elapsed_seconds * 1e9));
    (*stats->mutable_extra())["forward_seconds"] = s.forward_seconds;
    (*stats->mutable_extra())["backward_seconds"] = s.backward_seconds;
    (*stats->mutable_extra())["optimizer_seconds"] = s.optimizer_seconds;
    FillModelId(outcome->policy, response->mutable_policy_model_id());
    FillModelId(outcome->value, response->mutable_value_model_id());
    metrics_->Steps("ppo").Increment();
    metrics_->Loss("ppo").Set(s.policy_loss);
    metrics_->StepSeconds("ppo").Observe(s.elapsed_seconds);
    metrics_->Tokens("ppo").Increment(s.mean_response_length * static_cast<double>(s.num_rollouts));
    metrics_->ppo_reward_mean.Set(s.mean_reward);
    metrics_->ppo_kl_mean.Set(s.mean_kl);
    metrics_->kl_coef.Set(s.kl_beta);
    metrics_->ppo_policy_loss.Set(s.policy_loss);
    metrics_->ppo_value_loss.Set(s.value_loss);
    metrics_->ppo_clip_fraction.Set(s.clip_fraction);
    metrics_->model_version.Set(static_cast<double>(outcome->policy.version));
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerWriteReactor<v1::WeightsChunk>* PpoTrainerServiceImpl::ExportWeights(
    grpc::CallbackServerContext* /*context*/, const v1::ExportWeightsRequest* request) {
  LoadRole role = LoadRole::kPolicy;
  if (request->role() == v1::MODEL_ROLE_VALUE) {
    role = LoadRole::kValue;
  } else if (request->role() != v1::MODEL_ROLE_UNSPECIFIED && request->role() != v1::MODEL_ROLE_POLICY) {
    return runtime::FinishWriter<v1::WeightsChunk>(
        runtime::ToGrpcStatus(absl::InvalidArgumentError("role must be MODEL_ROLE_POLICY or MODEL_ROLE_VALUE")));
  }
  if (request->chunk_size_bytes() < 0) {
    return runtime::FinishWriter<v1::WeightsChunk>(
        runtime::ToGrpcStatus(absl::InvalidArgumentError("chunk_size_bytes must be >= 0")));
  }
  const int64_t chunk = request->chunk_size_bytes() > 0 ? request->chunk_size_bytes() : (1 << 20);
  const bool ema = request->ema_weights();
  std::optional<int64_t> target;
  if (request->has_target_version()) target = request->target_version();
  auto lease = engine_->Acquire("ExportWeights");
  if (!lease.ok()) return runtime::FinishWriter<v1::WeightsChunk>(runtime::ToGrpcStatus(lease.status()));
  auto [reactor, writer] = runtime::QueuedWriter<v1::WeightsChunk>::Create();
  auto shared_lease = std::make_shared<OperationLease>(*std::move(lease));
  worker_->Post([this, role, ema, chunk, target, writer = writer, shared_lease]() mutable {
    absl::StatusOr<ExportedWeights> exported = engine_->ExportWeights(role, ema);
    shared_lease.reset();  // the payload is a copy: training may go on while it streams
    if (!exported.ok()) {
      writer.Close(runtime::ToGrpcStatus(exported.status()));
      return;
    }
    v1::WeightsHeader header;
    FillModelId(exported->model_id, header.mutable_model_id());
    if (target) header.set_target_version(*target);
    serving::FillModelConfig(exported->config, header.mutable_config());
    (*header.mutable_metadata()->mutable_fields())["source"].set_string_value(ema ? "trainer-ema" : "trainer");
    absl::Status s = serving::ChunkSafetensors(exported->safetensors, header, chunk, [&](v1::WeightsChunk message) {
      return writer.Push(std::move(message)) ? absl::OkStatus() : absl::CancelledError("the caller went away");
    });
    writer.Close(runtime::ToGrpcStatus(s));
  });
  return reactor;
}

grpc::ServerUnaryReactor* PpoTrainerServiceImpl::SaveCheckpoint(grpc::CallbackServerContext* context,
                                                                const v1::SaveCheckpointRequest* request,
                                                                v1::SaveCheckpointResponse* response) {
  std::map<std::string, std::string> metadata;
  for (const auto& [key, value] : request->metadata().fields()) {
    metadata[key] = value.has_string_value() ? value.string_value() : value.DebugString();
  }
  auto lease = engine_->Acquire("SaveCheckpoint");
  if (!lease.ok()) return runtime::FinishUnary(context, runtime::ToGrpcStatus(lease.status()));
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto shared_lease = std::make_shared<OperationLease>(*std::move(lease));
  worker_->Post([this, path = request->path(), metadata, reactor, response, shared_lease]() mutable {
    absl::StatusOr<CheckpointOutcome> saved = engine_->SaveCheckpoint(path, metadata);
    shared_lease.reset();
    if (!saved.ok()) {
      reactor->Finish(runtime::ToGrpcStatus(saved.status()));
      return;
    }
    metrics_->last_checkpoint_timestamp.Set(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
    response->set_path(saved->path);
    response->set_step(saved->step);
    FillModelId(saved->policy, response->mutable_model_id());
    if (saved->value.version > 0) FillModelId(saved->value, response->mutable_value_model_id());
    response->set_total_bytes(saved->total_bytes);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* PpoTrainerServiceImpl::LoadCheckpoint(grpc::CallbackServerContext* context,
                                                                const v1::LoadCheckpointRequest* request,
                                                                v1::LoadCheckpointResponse* response) {
  LoadRole role = LoadRole::kAll;
  switch (request->role()) {
    case v1::MODEL_ROLE_UNSPECIFIED: role = LoadRole::kAll; break;
    case v1::MODEL_ROLE_POLICY: role = LoadRole::kPolicy; break;
    case v1::MODEL_ROLE_VALUE: role = LoadRole::kValue; break;
    default:
      return runtime::FinishUnary(context, runtime::ToGrpcStatus(absl::InvalidArgumentError(
                                               "role must be unset, MODEL_ROLE_POLICY or MODEL_ROLE_VALUE")));
  }
  if (request->path().empty()) {
    return runtime::FinishUnary(context, runtime::ToGrpcStatus(absl::InvalidArgumentError("path is required")));
  }
  auto lease = engine_->Acquire("LoadCheckpoint");
  if (!lease.ok()) return runtime::FinishUnary(context, runtime::ToGrpcStatus(lease.status()));
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto shared_lease = std::make_shared<OperationLease>(*std::move(lease));
  worker_->Post([this, path = request->path(), role, reactor, response, shared_lease]() mutable {
    absl::StatusOr<CheckpointOutcome> loaded = engine_->LoadCheckpoint(path, role);
    shared_lease.reset();
    if (!loaded.ok()) {
      reactor->Finish(runtime::ToGrpcStatus(loaded.status()));
      return;
    }
    response->set_path(loaded->path);
    response->set_step(loaded->step);
    FillModelId(loaded->policy, response->mutable_model_id());
    if (loaded->value.version > 0) FillModelId(loaded->value, response->mutable_value_model_id());
    metrics_->model_version.Set(static_cast<double>(loaded->policy.version));
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* PpoTrainerServiceImpl::GetModelInfo(grpc::CallbackServerContext* context,
                                                              const v1::GetModelInfoRequest* /*request*/,
                                                              v1::ModelInfo* response) {
  absl::StatusOr<PolicyInfo> info = engine_->GetPolicyInfo();
  if (!info.ok()) return runtime::FinishUnary(context, runtime::ToGrpcStatus(info.status()));
  FillModelId(info->id, response->mutable_model_id());
  serving::FillModelConfig(info->config, response->mutable_config());
  response->set_parameter_count(info->parameter_count);
  response->set_device(info->device);
  response->set_dtype(v1::DTYPE_F32);
  v1::TokenizerInfo* t = response->mutable_tokenizer();
  t->set_kind(serving::ToTokenizerKind(info->tokenizer_kind));
  t->set_vocab_size(info->tokenizer_vocab_size > 0 ? info->tokenizer_vocab_size
                                                   : static_cast<int32_t>(info->config.vocab_size));
  t->set_eos_token_id(info->eos_id ? *info->eos_id : -1);
  t->set_pad_token_id(info->pad_id ? *info->pad_id : -1);
  t->set_bos_token_id(-1);
  t->set_end_of_turn_token_id(-1);  // the trainer takes no chat prompts
  *response->mutable_loaded_at() = TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(info->loaded_at));
  response->set_source_path(info->source);
  response->set_role(v1::MODEL_ROLE_POLICY);
  return runtime::FinishUnary(context, grpc::Status::OK);
}

}  // namespace rlhf::trainer
