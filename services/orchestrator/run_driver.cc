#include "services/orchestrator/run_driver.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/data/jsonl_appender.h"
#include "common/data/jsonl_reader.h"
#include "common/labeling/human_queue_labeler.h"
#include "common/labeling/judge_labeler.h"
#include "common/labeling/labeler.h"
#include "common/runtime/status_util.h"
#include "common/serving/weights_transfer.h"
#include "common/task/evaluation.h"
#include "common/task/instructions.h"
#include "common/task/simulated_labeler.h"
#include "common/task/win_rate.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "google/protobuf/util/time_util.h"
#include "nlohmann/json.hpp"
#include "rlhf/v1/generation.grpc.pb.h"
#include "rlhf/v1/reference.grpc.pb.h"
#include "rlhf/v1/reward.grpc.pb.h"
#include "rlhf/v1/trainer.grpc.pb.h"
#include "services/orchestrator/run_setup.h"
#include "tools/report/report.h"

namespace rlhf::orchestrator {
namespace {

using google::protobuf::util::TimeUtil;
using Json = nlohmann::json;

google::protobuf::Timestamp Now() { return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now())); }

// "generation service at 127.0.0.1:5 (Generate): UNAVAILABLE: ..."
absl::Status RpcError(const std::string& service, const std::string& address, const char* method,
                      const grpc::Status& status) {
  absl::Status s = runtime::FromGrpcStatus(status);
  return absl::Status(s.code(), absl::StrCat(service, " service at ", address, " (", method, "): ", s.message()));
}

// What is done, persisted in progress.json after every completed step.
struct Progress {
  bool prepared = false;
  std::string pretrain_checkpoint;
  std::string sft_checkpoint;
  bool sft_samples = false;
  struct Round {
    bool comparisons = false;
    std::string reward_checkpoint;
    int64_t ppo_iteration = 0;  // iterations completed and checkpointed
    std::string trainer_checkpoint;
    bool ppo_done = false;
  };
  std::vector<Round> rounds;
  bool evaluated = false;

  Json ToJson() const {
    Json r = Json::array();
    for (const Round& x : rounds) {
      r.push_back({{"comparisons", x.comparisons},
                   {"reward_checkpoint", x.reward_checkpoint},
                   {"ppo_iteration", x.ppo_iteration},
                   {"trainer_checkpoint", x.trainer_checkpoint},
                   {"ppo_done", x.ppo_done}});
    }
    return {{"format", 1}, {"prepared", prepared}, {"pretrain_checkpoint", pretrain_checkpoint},
            {"sft_checkpoint", sft_checkpoint}, {"sft_samples", sft_samples},
            {"rounds", r}, {"evaluated", evaluated}};
  }
  static absl::StatusOr<Progress> FromJson(const std::string& text, const std::string& path) {
    Json j = Json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return absl::DataLossError(absl::StrCat(path, " is not valid JSON"));
    Progress p;
    p.prepared = j.value("prepared", false);
    p.pretrain_checkpoint = j.value("pretrain_checkpoint", std::string());
    p.sft_checkpoint = j.value("sft_checkpoint", std::string());
    p.sft_samples = j.value("sft_samples", false);
    p.evaluated = j.value("evaluated", false);
    if (j.contains("rounds") && j["rounds"].is_array()) {
      for (const Json& x : j["rounds"]) {
        Round r;
        r.comparisons = x.value("comparisons", false);
        r.reward_checkpoint = x.value("reward_checkpoint", std::string());
        r.ppo_iteration = x.value("ppo_iteration", int64_t{0});
        r.trainer_checkpoint = x.value("trainer_checkpoint", std::string());
        r.ppo_done = x.value("ppo_done", false);
        p.rounds.push_back(r);
      }
    }
    return p;
  }
};

// One sampled response, as the generation service returned it.
struct Sample {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  std::string text;
  bool stopped = false;
};

class Driver {
 public:
  Driver(const RunContext& context, v1::Run* run) : ctx_(context), run_(run), cfg_(context.config) {}
  ~Driver() {
    if (run_lock_fd_ >= 0) ::close(run_lock_fd_);  // releases the lock
  }

  absl::Status Run() {
    RETURN_IF_ERROR(LockRunDir());
    RETURN_IF_ERROR(Connect());
    RETURN_IF_ERROR(LoadProgress());
    ASSIGN_OR_RETURN(files_, PrepareRun(cfg_, ctx_.run_dir));
    if (!progress_.prepared) {
      progress_.prepared = true;
      RETURN_IF_ERROR(SaveProgress());
    }
    RETURN_IF_ERROR(OpenMetrics());
    RETURN_IF_ERROR(LoadPrompts());
    if (cfg_.pretrain().steps() > 0 && progress_.pretrain_checkpoint.empty()) RETURN_IF_ERROR(Pretrain());
    if (progress_.sft_checkpoint.empty()) RETURN_IF_ERROR(Sft());
    if (!progress_.sft_samples) {
      RETURN_IF_ERROR(SyncPolicyFromCheckpoint(progress_.sft_checkpoint));
      RETURN_IF_ERROR(SampleEval("sft_samples.jsonl"));
      progress_.sft_samples = true;
      RETURN_IF_ERROR(SaveProgress());
    }
    RETURN_IF_ERROR(SyncReference());
    progress_.rounds.resize(static_cast<size_t>(cfg_.rounds()));
    for (int32_t round = 1; round <= cfg_.rounds(); ++round) {
      Progress::Round& r = progress_.rounds[round - 1];
      if (r.ppo_done) continue;
      RETURN_IF_ERROR(RestoreTrainerForRound(round));
      if (!r.comparisons) RETURN_IF_ERROR(Comparisons(round));
      if (r.reward_checkpoint.empty()) RETURN_IF_ERROR(RewardModel(round));
      RETURN_IF_ERROR(Ppo(round));
    }
    if (!progress_.evaluated) RETURN_IF_ERROR(Evaluate());
    // Writers killed mid-write (this orchestrator, the trainer) left temporary files; nothing writes here now.
    ASSIGN_OR_RETURN(std::vector<std::string> stale, util::RemoveTempFiles(ctx_.run_dir));
    if (!stale.empty()) {
      Emit(v1::STAGE_EVALUATION, 0, 0, 0, {},
           absl::StrCat("removed ", stale.size(), " temporary files left by interrupted writes"));
    }
    const std::string report = ctx_.run_dir + "/report.html";
    if (absl::Status s = report::WriteRunReport(ctx_.run_dir, report); !s.ok()) {
      Emit(v1::STAGE_EVALUATION, 0, 0, 0, {}, absl::StrCat("report not written: ", s.message()));
    } else {
      Emit(v1::STAGE_EVALUATION, 0, 0, 0, {}, absl::StrCat("report: ", report));
    }
    return absl::OkStatus();
  }

 private:
  // ---- plumbing --------------------------------------------------------------------------------------------------

  absl::Status Connect() {
    auto channel = [&](const std::string& target) {
      runtime::ClientOptions o = ctx_.client;
      o.target = target;
      return runtime::MakeChannel(o);
    };
    const v1::ServiceAddresses& s = cfg_.services();
    ASSIGN_OR_RETURN(auto gen, channel(s.generation()));
    ASSIGN_OR_RETURN(auto ref, channel(s.reference()));
    ASSIGN_OR_RETURN(auto rew, channel(s.reward()));
    ASSIGN_OR_RETURN(auto tr, channel(s.trainer()));
    generation_ = v1::PolicyGenerationService::NewStub(gen);
    reference_ = v1::ReferenceLogprobService::NewStub(ref);
    reward_ = v1::RewardScoringService::NewStub(rew);
    trainer_ = v1::PpoTrainerService::NewStub(tr);
    return absl::OkStatus();
  }

  std::unique_ptr<grpc::ClientContext> Call() const { return runtime::ContextWithTimeout(ctx_.rpc_timeout); }

  absl::Status CheckCancelled() const {
    if (ctx_.cancelled && ctx_.cancelled()) return absl::CancelledError("the run was cancelled");
    return absl::OkStatus();
  }

  std::string Path(const std::string& relative) const { return ctx_.run_dir + "/" + relative; }

  absl::Status LoadProgress() {
    const std::string path = Path("progress.json");
    if (!util::PathExists(path)) return absl::OkStatus();
    ASSIGN_OR_RETURN(std::string text, util::ReadFile(path));
    ASSIGN_OR_RETURN(progress_, Progress::FromJson(text, path));
    return absl::OkStatus();
  }

  absl::Status SaveProgress() { return util::WriteFileAtomically(Path("progress.json"), progress_.ToJson().dump(2)); }

  // One driver at a time per run directory, in this process or another (two orchestrators on one runs root):
  // held until the driver ends.
  absl::Status LockRunDir() {
    const std::string path = Path(".lock");
    run_lock_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (run_lock_fd_ < 0) return util::ErrnoStatus("cannot open", path, errno);
    if (::flock(run_lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) {
        return absl::FailedPreconditionError(
            absl::StrCat("run directory ", ctx_.run_dir, " is in use by another orchestrator (", path, " is locked)"));
      }
      return util::ErrnoStatus("cannot lock", path, errno);
    }
    return absl::OkStatus();
  }

  // Whether a line of metrics.jsonl belongs to work that progress.json records as done. Lines of work that is not
  // (a stage cut short by a crash, PPO iterations after the last trainer checkpoint) are dropped on resume, since
  // that work is redone and logs them again.
  bool Committed(const std::string& stage, int32_t round, int64_t step) const {
    const Progress::Round* r = round >= 1 && round <= static_cast<int32_t>(progress_.rounds.size())
                                   ? &progress_.rounds[round - 1]
                                   : nullptr;
    if (stage == StageName(v1::STAGE_PRETRAIN)) return !progress_.pretrain_checkpoint.empty();
    if (stage == StageName(v1::STAGE_SFT)) return !progress_.sft_checkpoint.empty();
    if (stage == StageName(v1::STAGE_COMPARISONS)) return r != nullptr && r->comparisons;
    if (stage == StageName(v1::STAGE_REWARD_MODEL)) return r != nullptr && !r->reward_checkpoint.empty();
    if (stage == StageName(v1::STAGE_PPO)) return r != nullptr && (r->ppo_done || step <= r->ppo_iteration);
    if (stage == StageName(v1::STAGE_EVALUATION)) return progress_.evaluated;
    return true;  // not ours to judge
  }

  absl::Status OpenMetrics() {
    const std::string path = Path("metrics.jsonl");
    if (util::PathExists(path)) {
      ASSIGN_OR_RETURN(std::string text, util::ReadFile(path));
      std::string kept;
      bool dropped = false;
      for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
        Json j = Json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.is_object()) {  // a torn last line
          dropped = true;
          continue;
        }
        if (!Committed(j.value("stage", std::string()), j.value("round", 0), j.value("step", int64_t{0}))) {
          dropped = true;
          continue;
        }
        absl::StrAppend(&kept, line, "\n");
      }
      if (dropped) RETURN_IF_ERROR(util::WriteFileAtomically(path, kept));
    }
    ASSIGN_OR_RETURN(metrics_, data::JsonlAppender::Open(path));
    return absl::OkStatus();
  }

  void Emit(v1::Stage stage, int32_t round, int64_t step, int64_t total, const std::map<std::string, double>& metrics,
            const std::string& message = "") {
    v1::RunEvent event;
    event.set_run_id(ctx_.run_id);
    *event.mutable_time() = Now();
    event.set_stage(stage);
    event.set_round(round);
    event.set_step(step);
    event.set_total_steps(total);
    for (const auto& [k, v] : metrics) (*event.mutable_metrics())[k] = v;
    event.set_message(runtime::Utf8Safe(message));  // may quote a service's error
    run_->set_stage(stage);
    run_->set_round(round);
    run_->set_step(step);
    run_->set_total_steps(total);
    for (const auto& [k, v] : metrics) (*run_->mutable_metrics())[k] = v;
    *run_->mutable_update_time() = Now();
    if (ctx_.emit) ctx_.emit(event);
  }

  absl::Status LogMetrics(v1::Stage stage, int32_t round, int64_t step, const std::map<std::string, double>& metrics) {
    if (metrics.empty()) return absl::OkStatus();
    Json values = Json::object();
    for (const auto& [k, v] : metrics) {
      if (std::isfinite(v)) values[k] = v;
    }
    Json line = {{"time", TimeUtil::ToString(Now())}, {"stage", StageName(stage)}, {"round", round}, {"step", step},
                 {"metrics", values}};
    RETURN_IF_ERROR(metrics_->AppendLine(line.dump()));
    return absl::OkStatus();
  }

  // Adds a checkpoint to the run's lineage, replacing the record of the same step from an attempt cut short.
  void RecordCheckpoint(v1::Stage stage, int32_t round, int64_t step, const std::string& path, const v1::ModelId& id,
                        const std::map<std::string, double>& metrics) {
    auto* records = run_->mutable_checkpoints();
    for (int i = records->size() - 1; i >= 0; --i) {
      const v1::CheckpointRecord& old = records->Get(i);
      if ((old.stage() == stage && old.round() == round && old.step() == step) || old.path() == path) {
        records->DeleteSubrange(i, 1);
      }
    }
    v1::CheckpointRecord* c = run_->add_checkpoints();
    c->set_stage(stage);
    c->set_round(round);
    c->set_step(step);
    c->set_path(path);
    *c->mutable_model_id() = id;
    for (const auto& [k, v] : metrics) (*c->mutable_metrics())[k] = v;
    *c->mutable_create_time() = Now();
  }

  absl::StatusOr<std::vector<data::PromptRecord>> ReadPromptFile(const std::string& path) {
    data::ReadOptions options;
    options.policy = cfg_.task().bad_record_policy() == v1::BAD_RECORD_POLICY_SKIP ? data::BadRecordPolicy::kSkip
                                                                                  : data::BadRecordPolicy::kFail;
    ASSIGN_OR_RETURN(data::PromptReadResult read, data::ReadPrompts(path, options));
    if (read.records.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no prompts"));
    return std::move(read.records);
  }

  absl::Status LoadPrompts() {
    ASSIGN_OR_RETURN(comparison_prompts_, ReadPromptFile(files_.comparison_prompts));
    ASSIGN_OR_RETURN(ppo_prompts_, ReadPromptFile(files_.ppo_prompts));
    if (!files_.eval_prompts.empty()) {
      ASSIGN_OR_RETURN(eval_prompts_, ReadPromptFile(files_.eval_prompts));
    } else {
      // A seeded share of the PPO prompts, held out from PPO.
      std::vector<data::PromptRecord> train;
      for (size_t i = 0; i < ppo_prompts_.size(); ++i) {
        ((i * 2654435761u + cfg_.seed()) % 10 == 0 ? eval_prompts_ : train).push_back(ppo_prompts_[i]);
      }
      ppo_prompts_ = std::move(train);
    }
    const size_t n = std::min<size_t>(eval_prompts_.size(), static_cast<size_t>(cfg_.evaluation().num_prompts()));
    eval_prompts_.resize(n);
    return absl::OkStatus();
  }

  // ---- services -------------------------------------------------------------------------------------------------

  // Samples `n` responses to each prompt with the generation service, in calls of at most 64 prompts.
  // A chat prompt goes as its messages, rendered by the generation service with the policy's chat template.
  absl::StatusOr<std::vector<std::vector<Sample>>> Generate(const std::vector<data::PromptRecord>& prompts, int32_t n,
                                                            const v1::SamplingParams& sampling, uint64_t seed) {
    std::vector<std::vector<Sample>> out;
    constexpr size_t kPerCall = 64;
    for (size_t start = 0; start < prompts.size(); start += kPerCall) {
      RETURN_IF_ERROR(CheckCancelled());
      v1::GenerateRequest request;
      for (size_t i = start; i < std::min(prompts.size(), start + kPerCall); ++i) {
        v1::TextOrTokens* prompt = request.add_prompts();
        if (prompts[i].messages.empty()) {
          prompt->set_text(prompts[i].prompt);
        } else {
          for (const data::ChatTurn& turn : prompts[i].messages) {
            v1::ChatMessage* m = prompt->mutable_messages()->add_messages();
            m->set_role(turn.role);
            m->set_content(turn.content);
          }
        }
      }
      request.set_num_samples(n);
      *request.mutable_sampling() = sampling;
      request.mutable_sampling()->set_seed(seed * 1000003ULL + start);
      v1::GenerateResponse response;
      grpc::Status status;
      for (int attempt = 0; attempt < 2; ++attempt) {
        if (policy_version_ > 0) request.set_min_model_version(policy_version_);
        auto context = Call();
        status = generation_->Generate(context.get(), request, &response);
        // A replica behind the policy the others serve (one that joined after the last push) refuses: push the
        // policy to every replica again and ask again.
        if (status.error_code() != grpc::StatusCode::FAILED_PRECONDITION || !resync_policy_) break;
        RETURN_IF_ERROR(resync_policy_());
      }
      if (!status.ok()) return RpcError("generation", cfg_.services().generation(), "Generate", status);
      for (const v1::PromptCompletions& pc : response.results()) {
        std::vector<Sample> samples;
        for (const v1::Completion& c : pc.completions()) {
          Sample s;
          s.prompt_ids.assign(pc.prompt_token_ids().begin(), pc.prompt_token_ids().end());
          s.ids.assign(c.token_ids().begin(), c.token_ids().end());
          s.logprobs.assign(c.logprobs().begin(), c.logprobs().end());
          s.text = c.text();
          s.stopped = c.finish_reason() == v1::FINISH_REASON_STOP_TOKEN;
          samples.push_back(std::move(s));
        }
        out.push_back(std::move(samples));
      }
    }
    return out;
  }

  absl::StatusOr<std::vector<std::vector<float>>> ReferenceLogProbs(const std::vector<const Sample*>& samples,
                                                                    float temperature) {
    v1::LogProbsRequest request;
    request.set_temperature(temperature);
    for (const Sample* s : samples) {
      v1::PromptResponseIds* seq = request.add_sequences();
      seq->mutable_prompt_token_ids()->Add(s->prompt_ids.begin(), s->prompt_ids.end());
      seq->mutable_response_token_ids()->Add(s->ids.begin(), s->ids.end());
    }
    v1::LogProbsResponse response;
    for (int attempt = 0;; ++attempt) {
      auto context = Call();
      grpc::Status status = reference_->LogProbs(context.get(), request, &response);
      if (!status.ok()) return RpcError("reference", cfg_.services().reference(), "LogProbs", status);
      // A replica older than the SFT model we loaded (restarted since, or joined later) answers for its initial
      // model: load the SFT model into every replica and ask again.
      if (response.model_id().version() >= reference_version_) break;
      if (attempt > 0) {
        return absl::AbortedError(absl::StrCat("reference service at ", cfg_.services().reference(),
                                               " answers with model version ", response.model_id().version(),
                                               " after loading the SFT model (version ", reference_version_, ")"));
      }
      RETURN_IF_ERROR(SyncReference());
    }
    std::vector<std::vector<float>> out;
    for (const auto& r : response.results()) out.emplace_back(r.logprobs().begin(), r.logprobs().end());
    return out;
  }

  absl::StatusOr<std::vector<float>> Scores(const std::vector<const Sample*>& samples) {
    v1::ScoreRequest request;
    for (const Sample* s : samples) {
      v1::ScoreItem* item = request.add_items();
      item->mutable_prompt()->mutable_token_ids()->mutable_ids()->Add(s->prompt_ids.begin(), s->prompt_ids.end());
      item->mutable_response()->mutable_token_ids()->mutable_ids()->Add(s->ids.begin(), s->ids.end());
    }
    v1::ScoreResponse response;
    grpc::Status status;
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (reward_version_ > 0) request.set_min_model_version(reward_version_);
      auto context = Call();
      status = reward_->Score(context.get(), request, &response);
      // A replica older than the reward model the others serve (one that joined after the reload) refuses: reload
      // every replica and ask again.
      if (status.error_code() != grpc::StatusCode::FAILED_PRECONDITION || reward_checkpoint_.empty()) break;
      RETURN_IF_ERROR(SyncReward(reward_checkpoint_));
    }
    if (!status.ok()) return RpcError("reward", cfg_.services().reward(), "Score", status);
    return std::vector<float>(response.scores().begin(), response.scores().end());
  }

  // Runs `call` once for each server behind `target` (every replica behind a dns:/// name, as resolved now): a
  // weights update must reach all of them, while the other calls are spread by the channel's load balancing.
  // `call` returns the model version the replica reports; the result is the lowest of them.
  using ReplicaCall =
      std::function<absl::StatusOr<int64_t>(const std::shared_ptr<grpc::Channel>&, const std::string& replica)>;
  absl::StatusOr<int64_t> ForEachReplica(const std::string& target, const ReplicaCall& call) {
    int64_t lowest = 0;
    bool first = true;
    for (const std::string& replica : runtime::ReplicaTargets(target)) {
      runtime::ClientOptions o = ctx_.client;
      o.target = replica;
      o.load_balancing_policy.clear();
      ASSIGN_OR_RETURN(auto channel, runtime::MakeChannel(o));
      ASSIGN_OR_RETURN(const int64_t version, call(channel, replica));
      lowest = first ? version : std::min(lowest, version);
      first = false;
    }
    return lowest;
  }

  // Points every generation replica at a checkpoint directory.
  absl::Status SyncPolicyFromCheckpoint(const std::string& dir) {
    resync_policy_ = [this, dir] { return SyncPolicyFromCheckpoint(dir); };
    auto lowest = ForEachReplica(cfg_.services().generation(), [&](const auto& channel, const std::string& replica)
                                     -> absl::StatusOr<int64_t> {
      v1::UpdateWeightsFromCheckpointRequest request;
      request.set_path(dir);
      v1::UpdateWeightsResponse response;
      auto context = Call();
      grpc::Status status =
          v1::PolicyGenerationService::NewStub(channel)->UpdateWeightsFromCheckpoint(context.get(), request, &response);
      if (!status.ok()) return RpcError("generation", replica, "UpdateWeightsFromCheckpoint", status);
      return response.model_id().version();
    });
    if (!lowest.ok()) return lowest.status();
    policy_version_ = *lowest;
    return absl::OkStatus();
  }

  absl::Status SyncReference() {
    auto lowest = ForEachReplica(cfg_.services().reference(), [&](const auto& channel, const std::string& replica)
                                     -> absl::StatusOr<int64_t> {
      v1::UpdateWeightsFromCheckpointRequest request;
      request.set_path(progress_.sft_checkpoint);
      v1::UpdateWeightsResponse response;
      auto context = Call();
      grpc::Status status =
          v1::ReferenceLogprobService::NewStub(channel)->UpdateWeightsFromCheckpoint(context.get(), request, &response);
      if (!status.ok()) return RpcError("reference", replica, "UpdateWeightsFromCheckpoint", status);
      return response.model_id().version();
    });
    if (!lowest.ok()) return lowest.status();
    reference_version_ = *lowest;
    return absl::OkStatus();
  }

  // Every reward replica reloads `checkpoint`; Score then asks for at least the lowest version they report, so a
  // replica that missed the reload (it joined later) refuses and is brought up to date (see Scores).
  absl::Status SyncReward(const std::string& checkpoint) {
    auto lowest = ForEachReplica(cfg_.services().reward(), [&](const auto& channel, const std::string& replica)
                                     -> absl::StatusOr<int64_t> {
      v1::ReloadModelRequest request;
      request.set_checkpoint_path(checkpoint);
      v1::ReloadModelResponse response;
      auto context = Call();
      grpc::Status status = v1::RewardScoringService::NewStub(channel)->ReloadModel(context.get(), request, &response);
      if (!status.ok()) return RpcError("reward", replica, "ReloadModel", status);
      if (response.outcome() == v1::RELOAD_OUTCOME_REFUSED) {
        return absl::FailedPreconditionError(
            absl::StrCat("reward service ", replica, " refused ", checkpoint, ": ", response.message()));
      }
      return response.model_id().version();
    });
    if (!lowest.ok()) return lowest.status();
    reward_checkpoint_ = checkpoint;
    reward_version_ = *lowest;
    return absl::OkStatus();
  }

  // Streams the trainer's policy into every generation replica.
  absl::Status PushPolicy() {
    resync_policy_ = [this] { return PushPolicy(); };
    v1::ExportWeightsRequest request;
    request.set_chunk_size_bytes(1 << 20);
    auto export_context = Call();
    auto reader = trainer_->ExportWeights(export_context.get(), request);
    std::vector<v1::WeightsChunk> chunks;
    for (v1::WeightsChunk chunk; reader->Read(&chunk);) chunks.push_back(std::move(chunk));
    grpc::Status read_status = reader->Finish();
    if (!read_status.ok()) return RpcError("trainer", cfg_.services().trainer(), "ExportWeights", read_status);
    if (chunks.empty() || !chunks[0].has_header()) {
      return absl::InternalError(absl::StrCat("trainer service at ", cfg_.services().trainer(),
                                              " (ExportWeights): the stream has no header"));
    }
    RETURN_IF_ERROR(CheckTrainerVersion(chunks[0].header().model_id().version(), "ExportWeights"));
    auto lowest = ForEachReplica(cfg_.services().generation(), [&](const auto& channel, const std::string& replica)
                                     -> absl::StatusOr<int64_t> {
      v1::UpdateWeightsResponse response;
      auto update_context = Call();
      auto writer = v1::PolicyGenerationService::NewStub(channel)->UpdateWeights(update_context.get(), &response);
      for (const v1::WeightsChunk& chunk : chunks) {
        if (!writer->Write(chunk)) break;  // the server ended the call: Finish says why
      }
      writer->WritesDone();
      grpc::Status status = writer->Finish();
      if (!status.ok()) return RpcError("generation", replica, "UpdateWeights", status);
      return response.model_id().version();
    });
    if (!lowest.ok()) return lowest.status();
    policy_version_ = *lowest;
    return absl::OkStatus();
  }

  absl::StatusOr<v1::LoadCheckpointResponse> TrainerLoad(const std::string& path, v1::ModelRole role) {
    v1::LoadCheckpointRequest request;
    request.set_path(path);
    request.set_role(role);
    v1::LoadCheckpointResponse response;
    auto context = Call();
    grpc::Status status = trainer_->LoadCheckpoint(context.get(), request, &response);
    if (!status.ok()) return RpcError("trainer", cfg_.services().trainer(), "LoadCheckpoint", status);
    trainer_version_ = response.model_id().version();
    return response;
  }

  // The trainer holds what our calls gave it (policy, value model, optimiser state) only while its policy version is
  // the one our last call left: a trainer restarted since starts over from its initial model and reports another.
  // Then the run cannot go on from here: Aborted, and the run resumes from its last completed step (which reloads
  // the trainer). A call that does not change the policy checks `reported` with this.
  absl::Status CheckTrainerVersion(int64_t reported, const char* method) {
    if (trainer_version_ == 0 || reported == trainer_version_) {
      trainer_version_ = reported;
      return absl::OkStatus();
    }
    return absl::AbortedError(absl::StrCat("trainer service at ", cfg_.services().trainer(), " (", method,
                                           ") reports policy version ", reported, " where ", trainer_version_,
                                           " was expected: it restarted and lost its state"));
  }

  // Streams a training RPC's events into progress and metrics; returns the final summary.
  template <typename Request, typename Method>
  absl::StatusOr<v1::TrainingSummary> Train(const Request& request, Method method, v1::Stage stage, int32_t round,
                                            const char* method_name) {
    auto context = Call();
    auto reader = (trainer_.get()->*method)(context.get(), request);
    v1::TrainingEvent event;
    v1::TrainingSummary summary;
    while (reader->Read(&event)) {
      std::map<std::string, double> metrics(event.metrics().begin(), event.metrics().end());
      if (event.done()) {
        summary = event.summary();
        continue;
      }
      if (ctx_.cancelled && ctx_.cancelled()) context->TryCancel();
      RETURN_IF_ERROR(LogMetrics(stage, round, event.step(), metrics));
      Emit(stage, round, event.step(), event.total_steps(), metrics);
    }
    grpc::Status status = reader->Finish();
    RETURN_IF_ERROR(CheckCancelled());
    if (!status.ok()) return RpcError("trainer", cfg_.services().trainer(), method_name, status);
    return summary;
  }

  // ---- stages ---------------------------------------------------------------------------------------------------

  absl::Status Sft() {
    Emit(v1::STAGE_SFT, 0, 0, 0, {}, "supervised fine-tuning");
    v1::TrainSftRequest request;
    request.set_data_path(files_.sft_data);
    request.set_validation_fraction(cfg_.sft().validation_fraction());
    *request.mutable_hparams() = cfg_.sft().hparams();
    *request.mutable_selection() = cfg_.sft().selection();
    request.set_output_dir(Path("checkpoints/sft"));
    request.set_init_model_path(progress_.pretrain_checkpoint.empty() ? files_.init_model
                                                                      : progress_.pretrain_checkpoint);
    request.set_bad_record_policy(cfg_.task().bad_record_policy());
    // A previous attempt may have left epoch checkpoints: start over cleanly.
    std::error_code ignored;
    std::filesystem::remove_all(Path("checkpoints/sft"), ignored);
    ASSIGN_OR_RETURN(v1::TrainingSummary summary,
                     Train(request, &v1::PpoTrainerService::Stub::TrainSft, v1::STAGE_SFT, 0, "TrainSft"));
    trainer_version_ = summary.model_id().version();
    RecordCheckpoint(v1::STAGE_SFT, 0, 0, summary.checkpoint_path(), summary.model_id(),
                     {summary.metrics().begin(), summary.metrics().end()});
    progress_.sft_checkpoint = summary.checkpoint_path();
    return SaveProgress();
  }

  // Language-model pretraining on plain text (stage 0): the trainer's SFT loop with each text's first word as the
  // context and the rest as the target, so every later token is trained on.
  absl::Status Pretrain() {
    Emit(v1::STAGE_PRETRAIN, 0, 0, cfg_.pretrain().steps(), {}, "pretraining on plain text");
    if (files_.pretraining.empty()) {
      return absl::InvalidArgumentError("config.pretrain.steps > 0 needs task.pretrain_text_path (or builtin_task)");
    }
    data::ReadOptions options;
    options.policy = cfg_.task().bad_record_policy() == v1::BAD_RECORD_POLICY_SKIP ? data::BadRecordPolicy::kSkip
                                                                                  : data::BadRecordPolicy::kFail;
    ASSIGN_OR_RETURN(data::PretrainingReadResult texts, data::ReadPretrainingTexts(files_.pretraining, options));
    std::string lines;
    for (const data::PretrainingText& t : texts.records) {
      const size_t start = t.text.find_first_not_of(" \t\n");
      if (start == std::string::npos) continue;
      const size_t end = t.text.find_first_of(" \t\n", start);
      if (end == std::string::npos) continue;  // one word: nothing to predict
      const size_t rest = t.text.find_first_not_of(" \t\n", end);
      if (rest == std::string::npos) continue;
      Json line = {{"prompt", t.text.substr(start, end - start)}, {"response", t.text.substr(rest)}};
      absl::StrAppend(&lines, line.dump(), "\n");
    }
    if (lines.empty()) return absl::InvalidArgumentError(absl::StrCat(files_.pretraining, ": no text of 2+ words"));
    RETURN_IF_ERROR(util::WriteFileAtomically(Path("data/pretrain_as_lm.jsonl"), lines));
    v1::TrainSftRequest request;
    request.set_data_path(Path("data/pretrain_as_lm.jsonl"));
    v1::SftHyperParams* h = request.mutable_hparams();
    h->set_epochs(1000000);  // bounded by max_steps
    h->set_max_steps(cfg_.pretrain().steps());
    h->set_batch_size(cfg_.pretrain().batch_size() > 0 ? cfg_.pretrain().batch_size() : 64);
    h->set_dropout(0.0f);
    h->set_seed(cfg_.seed());
    *h->mutable_optimizer() = cfg_.pretrain().optimizer();
    if (h->optimizer().learning_rate() == 0) h->mutable_optimizer()->set_learning_rate(1e-3);
    request.set_output_dir(Path("checkpoints/pretrain"));
    request.set_init_model_path(files_.init_model);
    std::error_code ignored;
    std::filesystem::remove_all(Path("checkpoints/pretrain"), ignored);
    ASSIGN_OR_RETURN(v1::TrainingSummary summary,
                     Train(request, &v1::PpoTrainerService::Stub::TrainSft, v1::STAGE_PRETRAIN, 0, "TrainSft"));
    trainer_version_ = summary.model_id().version();
    RecordCheckpoint(v1::STAGE_PRETRAIN, 0, cfg_.pretrain().steps(), summary.checkpoint_path(), summary.model_id(),
                     {summary.metrics().begin(), summary.metrics().end()});
    progress_.pretrain_checkpoint = summary.checkpoint_path();
    return SaveProgress();
  }

  // Samples one response per held-out prompt from the generation service's current policy.
  static std::string SamplesJsonl(const std::vector<data::PromptRecord>& prompts,
                                  const std::vector<std::vector<Sample>>& samples) {
    std::string lines;
    for (size_t i = 0; i < samples.size(); ++i) {
      for (const Sample& s : samples[i]) {
        Json j = {{"prompt", prompts[i].prompt}, {"text", s.text}, {"ids", s.ids}, {"prompt_ids", s.prompt_ids},
                  {"logprobs", s.logprobs}, {"stopped", s.stopped}};
        absl::StrAppend(&lines, j.dump(), "\n");
      }
    }
    return lines;
  }

  absl::Status SampleEval(const std::string& name) {
    Emit(v1::STAGE_EVALUATION, 0, 0, 0, {}, absl::StrCat("sampling ", eval_prompts_.size(), " held-out prompts"));
    ASSIGN_OR_RETURN(auto samples, Generate(eval_prompts_, 1, cfg_.evaluation().sampling(), cfg_.seed() + 77));
    RETURN_IF_ERROR(util::MakeDirectories(Path("eval")));
    return util::WriteFileAtomically(Path("eval/" + name), SamplesJsonl(eval_prompts_, samples));
  }

  absl::StatusOr<std::vector<Sample>> ReadEvalSamples(const std::string& name) {
    return ReadSamples(Path("eval/" + name));
  }

  static absl::StatusOr<std::vector<Sample>> ReadSamples(const std::string& path) {
    ASSIGN_OR_RETURN(std::string text, util::ReadFile(path));
    std::vector<Sample> out;
    for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
      Json j = Json::parse(line, nullptr, false);
      if (j.is_discarded()) return absl::DataLossError(absl::StrCat(path, ":", out.size() + 1, " is corrupt"));
      Sample s;
      s.text = j.value("text", std::string());
      s.ids = j.value("ids", std::vector<int32_t>());
      s.prompt_ids = j.value("prompt_ids", std::vector<int32_t>());
      s.logprobs = j.value("logprobs", std::vector<float>());
      s.stopped = j.value("stopped", false);
      out.push_back(std::move(s));
    }
    return out;
  }

  // The trainer's state at the start (or resumption) of a round: policy and value model, and the generation service
  // holding the same policy.
  absl::Status RestoreTrainerForRound(int32_t round) {
    const Progress::Round& r = progress_.rounds[round - 1];
    if (!r.trainer_checkpoint.empty()) {
      ASSIGN_OR_RETURN(auto loaded, TrainerLoad(r.trainer_checkpoint, v1::MODEL_ROLE_UNSPECIFIED));
      (void)loaded;
    } else {
      // The policy the round starts from: SFT, or the end of the previous round.
      const std::string policy = round == 1 ? progress_.sft_checkpoint
                                            : progress_.rounds[round - 2].trainer_checkpoint;
      ASSIGN_OR_RETURN(auto loaded, TrainerLoad(policy, v1::MODEL_ROLE_POLICY));
      (void)loaded;
      if (!r.reward_checkpoint.empty()) {
        ASSIGN_OR_RETURN(auto value, TrainerLoad(r.reward_checkpoint, v1::MODEL_ROLE_VALUE));
        (void)value;
      }
    }
    if (!r.reward_checkpoint.empty()) RETURN_IF_ERROR(SyncReward(r.reward_checkpoint));
    return PushPolicy();
  }

  absl::StatusOr<std::unique_ptr<labeling::Labeler>> MakeLabeler(int32_t round) {
    const v1::LabelerConfig& l = cfg_.labeler();
    if (l.has_judge()) {
      labeling::JudgeLabelerOptions o;
      o.client = ctx_.client;
      o.client.target = l.judge().reward_service_address();
      o.noise_rate = l.judge().noise_rate();
      o.seed = l.judge().seed();
      ASSIGN_OR_RETURN(auto labeler, labeling::JudgeLabeler::Create(o));
      return std::unique_ptr<labeling::Labeler>(std::move(labeler));
    }
    if (l.has_simulated()) {
      task::SimulatedLabelerOptions o;
      o.noise_rate = l.simulated().noise_rate();
      o.seed = l.simulated().seed() + static_cast<uint64_t>(round);
      ASSIGN_OR_RETURN(auto labeler, task::SimulatedLabeler::Create(o));
      return std::unique_ptr<labeling::Labeler>(std::move(labeler));
    }
    if (l.has_human_queue()) {
      labeling::HumanQueueLabelerOptions o;
      o.client = ctx_.client;
      o.client.target = cfg_.services().labeling();
      o.task_timeout = absl::Nanoseconds(TimeUtil::DurationToNanoseconds(l.human_queue().task_timeout()));
      o.max_wait = absl::Nanoseconds(TimeUtil::DurationToNanoseconds(l.human_queue().max_wait()));
      o.min_completed = l.human_queue().min_completed();
      o.instructions = l.human_queue().instructions();
      if (o.instructions.empty() && files_.builtin_task) {
        o.instructions =
            "Rank the responses from best (1) to worst: the best one does exactly what the instruction asks, in the "
            "form it asks for, and stops there. Give equal ranks to responses that are equally good.";
      }
      ASSIGN_OR_RETURN(auto labeler, labeling::HumanQueueLabeler::Create(o));
      return std::unique_ptr<labeling::Labeler>(std::move(labeler));
    }
    return absl::InvalidArgumentError("config.labeler: set one of dataset, simulated, judge, human_queue");
  }

  // The round's samples to be judged: generated once and kept in comparisons/round-<n>.samples.jsonl, so a resumed
  // run asks its labeler about exactly the responses it asked about before (people may have answered some).
  absl::StatusOr<std::vector<std::vector<Sample>>> ComparisonSamples(int32_t round,
                                                                    const std::vector<data::PromptRecord>& prompts) {
    const int32_t k = cfg_.comparisons().responses_per_prompt();
    const std::string path = Path(absl::StrCat("comparisons/round-", round, ".samples.jsonl"));
    std::vector<std::vector<Sample>> samples;
    if (util::PathExists(path)) {
      ASSIGN_OR_RETURN(std::vector<Sample> flat, ReadSamples(path));
      if (flat.size() != prompts.size() * static_cast<size_t>(k)) {
        return absl::DataLossError(absl::StrCat(path, " holds ", flat.size(), " samples, expected ",
                                                prompts.size() * static_cast<size_t>(k)));
      }
      for (size_t i = 0; i < prompts.size(); ++i) {
        samples.emplace_back(flat.begin() + i * k, flat.begin() + (i + 1) * k);
      }
      return samples;
    }
    constexpr size_t kBatch = 256;
    for (size_t start = 0; start < prompts.size(); start += kBatch) {
      const std::vector<data::PromptRecord> part(prompts.begin() + start,
                                          prompts.begin() + std::min(prompts.size(), start + kBatch));
      ASSIGN_OR_RETURN(auto generated, Generate(part, k, cfg_.comparisons().sampling(),
                                                cfg_.seed() * 31 + round * 7919 + start));
      for (auto& g : generated) samples.push_back(std::move(g));
      Emit(v1::STAGE_COMPARISONS, round, 0, static_cast<int64_t>(prompts.size()), {},
           absl::StrCat("sampled ", start + part.size(), " of ", prompts.size(), " prompts"));
    }
    RETURN_IF_ERROR(util::WriteFileAtomically(path, SamplesJsonl(prompts, samples)));
    return samples;
  }

  absl::Status Comparisons(int32_t round) {
    Progress::Round& r = progress_.rounds[round - 1];
    RETURN_IF_ERROR(util::MakeDirectories(Path("comparisons")));
    const std::string set_path = Path(absl::StrCat("comparisons/round-", round, ".pb"));
    if (cfg_.labeler().has_dataset()) {
      r.comparisons = true;  // the file is the comparisons
      return SaveProgress();
    }
    ASSIGN_OR_RETURN(std::unique_ptr<labeling::Labeler> labeler, MakeLabeler(round));
    const int32_t n = cfg_.comparisons().num_prompts();
    std::vector<data::PromptRecord> prompts;
    const size_t offset = static_cast<size_t>(round - 1) * n;
    for (int32_t i = 0; i < n; ++i) prompts.push_back(comparison_prompts_[(offset + i) % comparison_prompts_.size()]);
    ASSIGN_OR_RETURN(auto samples, ComparisonSamples(round, prompts));
    std::vector<labeling::RankingTask> tasks;
    for (size_t i = 0; i < prompts.size(); ++i) {
      labeling::RankingTask t;
      t.prompt = prompts[i].prompt;
      for (const data::ChatTurn& turn : prompts[i].messages) t.messages.emplace_back(turn.role, turn.content);
      for (const Sample& s : samples[i]) t.responses.push_back(s.text);
      tasks.push_back(std::move(t));
    }
    Emit(v1::STAGE_COMPARISONS, round, 0, n, {}, absl::StrCat("asking ", labeler->Describe(), " to rank ", n,
                                                               " sets of ", cfg_.comparisons().responses_per_prompt(),
                                                               " responses"));
    labeling::LabelingOptions options;
    options.run_id = ctx_.run_id;
    options.round = round;
    options.cancelled = ctx_.cancelled;
    absl::Time last_progress = absl::InfinitePast();
    options.progress = [&](int64_t answered, int64_t total) {
      if (answered < total && absl::Now() - last_progress < absl::Seconds(1)) return;
      last_progress = absl::Now();
      Emit(v1::STAGE_COMPARISONS, round, answered, total, {});
    };
    ASSIGN_OR_RETURN(auto judgements, labeler->Judge(tasks, options));
    v1::ComparisonSet set;
    std::string readable;
    int64_t pairs = 0;
    int64_t answered = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (!judgements[i]) continue;
      ++answered;
      const auto& prompt_ids = samples[i][0].prompt_ids;
      for (const labeling::Preference& p : judgements[i]->preferences) {
        v1::Comparison* c = set.add_comparisons();
        c->mutable_prompt()->mutable_token_ids()->mutable_ids()->Add(prompt_ids.begin(), prompt_ids.end());
        const auto& w = samples[i][p.preferred].ids;
        const auto& l = samples[i][p.other].ids;
        c->mutable_chosen()->mutable_token_ids()->mutable_ids()->Add(w.begin(), w.end());
        c->mutable_rejected()->mutable_token_ids()->mutable_ids()->Add(l.begin(), l.end());
        c->set_labeler_id(judgements[i]->labeler_id);
        // The pairwise form of a comparisons file (data/records.h), which a later run can train on.
        Json line = Json::object();
        if (prompts[i].messages.empty()) {
          line["prompt"] = prompts[i].prompt;
        } else {
          line["messages"] = Json::array();
          for (const data::ChatTurn& turn : prompts[i].messages) {
            line["messages"].push_back({{"role", turn.role}, {"content", turn.content}});
          }
        }
        line["chosen"] = samples[i][p.preferred].text;
        line["rejected"] = samples[i][p.other].text;
        line["labeler"] = judgements[i]->labeler_id;
        absl::StrAppend(&readable, line.dump(), "\n");
        ++pairs;
      }
    }
    Emit(v1::STAGE_COMPARISONS, round, answered, n, {{"comparisons/pairs", static_cast<double>(pairs)}});
    if (set.comparisons().empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the labeler expressed no preference (", answered, " of ", n,
                       " tasks answered, every answer a tie)"));
    }
    RETURN_IF_ERROR(util::WriteFileAtomically(Path(absl::StrCat("comparisons/round-", round, ".jsonl")), readable));
    RETURN_IF_ERROR(util::WriteFileAtomically(set_path, set.SerializeAsString()));
    RETURN_IF_ERROR(LogMetrics(v1::STAGE_COMPARISONS, round, n,
                               {{"comparisons/pairs", static_cast<double>(pairs)},
                                {"comparisons/answered", static_cast<double>(answered)}}));
    r.comparisons = true;
    return SaveProgress();
  }

  absl::Status RewardModel(int32_t round) {
    Progress::Round& r = progress_.rounds[round - 1];
    Emit(v1::STAGE_REWARD_MODEL, round, 0, 0, {}, "training the reward model");
    v1::TrainRewardModelRequest request;
    if (cfg_.labeler().has_dataset()) {
      request.set_comparisons_path(cfg_.labeler().dataset().path());
    } else {
      v1::ComparisonSet* set = request.mutable_inline_comparisons();
      for (int32_t from = cfg_.comparisons().accumulate_rounds() ? 1 : round; from <= round; ++from) {
        ASSIGN_OR_RETURN(std::string bytes, util::ReadFile(Path(absl::StrCat("comparisons/round-", from, ".pb"))));
        v1::ComparisonSet part;
        if (!part.ParseFromString(bytes)) return absl::DataLossError(absl::StrCat("comparisons of round ", from, " are corrupt"));
        set->mutable_comparisons()->MergeFrom(part.comparisons());
      }
    }
    *request.mutable_hparams() = cfg_.reward_model().hparams();
    request.set_validation_fraction(cfg_.reward_model().validation_fraction());
    request.set_init_model_path(progress_.sft_checkpoint);
    request.set_normalization_demonstrations_path(files_.sft_data);
    request.set_bad_record_policy(cfg_.task().bad_record_policy());
    request.set_output_dir(Path("checkpoints/reward"));
    request.set_init_value_model(true);
    ASSIGN_OR_RETURN(v1::TrainingSummary summary,
                     Train(request, &v1::PpoTrainerService::Stub::TrainRewardModel, v1::STAGE_REWARD_MODEL, round,
                           "TrainRewardModel"));
    RecordCheckpoint(v1::STAGE_REWARD_MODEL, round, 0, summary.checkpoint_path(), summary.model_id(),
                     {summary.metrics().begin(), summary.metrics().end()});
    RETURN_IF_ERROR(SyncReward(summary.checkpoint_path()));
    r.reward_checkpoint = summary.checkpoint_path();
    RETURN_IF_ERROR(SaveProgress());
    // Reward models of attempts cut short (a call of a killed orchestrator that the trainer finished) are no one's.
    std::set<std::string> kept;
    for (const Progress::Round& x : progress_.rounds) kept.insert(x.reward_checkpoint);
    std::error_code error;
    for (const auto& entry : std::filesystem::directory_iterator(Path("checkpoints/reward"), error)) {
      if (kept.count(entry.path().string()) == 0 && !util::IsTempName(entry.path().filename().string())) {
        std::filesystem::remove_all(entry.path(), error);
      }
    }
    return absl::OkStatus();
  }

  absl::Status Ppo(int32_t round) {
    Progress::Round& r = progress_.rounds[round - 1];
    const int32_t iterations = cfg_.ppo().iterations();
    const int32_t per = cfg_.ppo().prompts_per_iteration();
    const float temperature = cfg_.ppo().sampling().has_temperature() ? cfg_.ppo().sampling().temperature() : 1.0f;
    Emit(v1::STAGE_PPO, round, r.ppo_iteration, iterations,
         {}, r.ppo_iteration > 0 ? absl::StrCat("resuming PPO after iteration ", r.ppo_iteration) : "PPO");
    for (int64_t it = r.ppo_iteration + 1; it <= iterations; ++it) {
      RETURN_IF_ERROR(CheckCancelled());
      std::vector<data::PromptRecord> prompts;
      const size_t offset = (static_cast<size_t>(round - 1) * iterations + static_cast<size_t>(it - 1)) * per;
      for (int32_t i = 0; i < per; ++i) prompts.push_back(ppo_prompts_[(offset + i) % ppo_prompts_.size()]);
      ASSIGN_OR_RETURN(auto samples, Generate(prompts, 1, cfg_.ppo().sampling(),
                                              cfg_.seed() * 1009 + static_cast<uint64_t>(round) * 100003 + it));
      std::vector<const Sample*> rows;
      for (const auto& s : samples) {
        if (!s[0].ids.empty()) rows.push_back(&s[0]);
      }
      if (rows.size() < 2) return absl::FailedPreconditionError("PPO: the policy produced fewer than 2 responses");
      ASSIGN_OR_RETURN(auto ref, ReferenceLogProbs(rows, temperature));
      ASSIGN_OR_RETURN(auto scores, Scores(rows));
      v1::PpoStepRequest request;
      for (size_t i = 0; i < rows.size(); ++i) {
        v1::Rollout* rollout = request.add_rollouts();
        rollout->mutable_prompt_token_ids()->Add(rows[i]->prompt_ids.begin(), rows[i]->prompt_ids.end());
        rollout->mutable_response_token_ids()->Add(rows[i]->ids.begin(), rows[i]->ids.end());
        rollout->mutable_sampling_logprobs()->Add(rows[i]->logprobs.begin(), rows[i]->logprobs.end());
        rollout->mutable_reference_logprobs()->Add(ref[i].begin(), ref[i].end());
        rollout->set_reward_score(scores[i]);
        rollout->set_ended_with_stop_token(rows[i]->stopped);
      }
      *request.mutable_hparams() = cfg_.ppo().hparams();
      request.mutable_hparams()->set_seed(cfg_.ppo().hparams().seed() + static_cast<uint64_t>(it));
      // A trainer that restarted since RestoreTrainerForRound refuses (ABORTED) instead of stepping its initial model.
      if (trainer_version_ > 0) request.set_expected_policy_version(trainer_version_);
      v1::PpoStepResponse response;
      auto context = Call();
      grpc::Status status = trainer_->PpoStep(context.get(), request, &response);
      if (!status.ok()) return RpcError("trainer", cfg_.services().trainer(), "PpoStep", status);
      trainer_version_ = response.policy_model_id().version();
      RETURN_IF_ERROR(PushPolicy());
      const v1::PpoStats& s = response.stats();
      std::map<std::string, double> metrics = {
          {"ppo/mean_reward", s.mean_reward()},   {"ppo/kl", s.mean_kl()},
          {"ppo/policy_loss", s.policy_loss()},   {"ppo/value_loss", s.value_loss()},
          {"ppo/clip_fraction", s.clip_fraction()}, {"ppo/entropy", s.entropy()},
          {"ppo/kl_coef", s.kl_beta()},           {"ppo/approx_kl", s.approx_kl()},
          {"ppo/explained_variance", s.explained_variance()},
          {"ppo/mean_response_length", s.mean_response_length()},
          {"ppo/stop_token_fraction", s.stop_token_fraction()}};
      if (files_.builtin_task) {
        double true_score = 0;
        for (size_t i = 0; i < rows.size(); ++i) {
          auto score = task::TrueScore(prompts[i].prompt, rows[i]->text, task::ResponseForm::kGeneratedText);
          if (score.ok()) true_score += *score;
        }
        metrics["ppo/true_score"] = true_score / static_cast<double>(rows.size());
      }
      RETURN_IF_ERROR(LogMetrics(v1::STAGE_PPO, round, it, metrics));
      Emit(v1::STAGE_PPO, round, it, iterations, metrics);
      if (it % ctx_.checkpoint_every == 0 || it == iterations) {
        RETURN_IF_ERROR(metrics_->Flush());
        const std::string path = Path(absl::StrCat("checkpoints/trainer/round-", round, "-iter-", it));
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);  // a partial one from before a crash has a hidden name anyway
        v1::SaveCheckpointRequest save;
        save.set_path(path);
        (*save.mutable_metadata()->mutable_fields())["run_id"].set_string_value(ctx_.run_id);
        (*save.mutable_metadata()->mutable_fields())["round"].set_string_value(absl::StrCat(round));
        (*save.mutable_metadata()->mutable_fields())["iteration"].set_string_value(absl::StrCat(it));
        v1::SaveCheckpointResponse saved;
        auto save_context = Call();
        grpc::Status save_status = trainer_->SaveCheckpoint(save_context.get(), save, &saved);
        if (!save_status.ok()) return RpcError("trainer", cfg_.services().trainer(), "SaveCheckpoint", save_status);
        if (absl::Status s = CheckTrainerVersion(saved.model_id().version(), "SaveCheckpoint"); !s.ok()) {
          std::filesystem::remove_all(path, ignored);  // a restarted trainer's initial model, not this iteration's
          return s;
        }
        const std::string previous = r.trainer_checkpoint;
        r.ppo_iteration = it;
        r.trainer_checkpoint = path;
        if (it == iterations) r.ppo_done = true;
        RETURN_IF_ERROR(SaveProgress());
        RecordCheckpoint(v1::STAGE_PPO, round, it, path, saved.model_id(), metrics);
        if (!previous.empty() && previous != path) {
          // Only the newest trainer checkpoint is kept (on disk and in run.json).
          std::filesystem::remove_all(previous, ignored);
          auto* records = run_->mutable_checkpoints();
          for (int i = records->size() - 1; i >= 0; --i) {
            if (records->Get(i).path() == previous) records->DeleteSubrange(i, 1);
          }
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status Evaluate() {
    ASSIGN_OR_RETURN(std::vector<Sample> sft, ReadEvalSamples("sft_samples.jsonl"));
    // The final policy, from its checkpoint: the generation service may have restarted (and lost it) since PPO.
    if (!progress_.rounds.empty() && !progress_.rounds.back().trainer_checkpoint.empty()) {
      RETURN_IF_ERROR(SyncPolicyFromCheckpoint(progress_.rounds.back().trainer_checkpoint + "/policy"));
    }
    RETURN_IF_ERROR(SampleEval("ppo_samples.jsonl"));
    ASSIGN_OR_RETURN(std::vector<Sample> ppo, ReadEvalSamples("ppo_samples.jsonl"));
    const size_t n = std::min({sft.size(), ppo.size(), eval_prompts_.size()});
    if (n < 2) return absl::FailedPreconditionError("evaluation needs at least 2 held-out prompts");
    std::vector<double> sft_scores, ppo_scores;
    std::vector<task::EvalSample> samples;
    if (files_.builtin_task) {
      for (size_t i = 0; i < n; ++i) {
        ASSIGN_OR_RETURN(int32_t a,
                         task::TrueScore(eval_prompts_[i].prompt, sft[i].text, task::ResponseForm::kGeneratedText));
        ASSIGN_OR_RETURN(int32_t b,
                         task::TrueScore(eval_prompts_[i].prompt, ppo[i].text, task::ResponseForm::kGeneratedText));
        sft_scores.push_back(a);
        ppo_scores.push_back(b);
      }
    } else {
      // Without a programmatic scorer, the run's reward model judges.
      std::vector<const Sample*> a, b;
      for (size_t i = 0; i < n; ++i) a.push_back(&sft[i]), b.push_back(&ppo[i]);
      ASSIGN_OR_RETURN(auto sa, Scores(a));
      ASSIGN_OR_RETURN(auto sb, Scores(b));
      sft_scores.assign(sa.begin(), sa.end());
      ppo_scores.assign(sb.begin(), sb.end());
    }
    for (size_t i = 0; i < n; ++i) {
      samples.push_back({eval_prompts_[i].prompt, sft[i].text, sft_scores[i], ppo[i].text, ppo_scores[i]});
    }
    task::WinRateOptions wo;
    wo.confidence_level = cfg_.evaluation().confidence_level();
    ASSIGN_OR_RETURN(task::WinRate noiseless, task::ComputeWinRate(ppo_scores, sft_scores, wo));
    std::optional<task::WinRate> noisy;
    if (cfg_.labeler().has_simulated() && cfg_.labeler().simulated().noise_rate() > 0) {
      ASSIGN_OR_RETURN(std::unique_ptr<labeling::Labeler> labeler, MakeLabeler(1000));
      std::vector<labeling::RankingTask> tasks;
      for (size_t i = 0; i < n; ++i) {
        labeling::RankingTask t;
        t.prompt = eval_prompts_[i].prompt;
        t.responses = {ppo[i].text, sft[i].text};
        for (const data::ChatTurn& turn : eval_prompts_[i].messages) t.messages.emplace_back(turn.role, turn.content);
        tasks.push_back(std::move(t));
      }
      ASSIGN_OR_RETURN(auto judgements, labeler->Judge(tasks, {}));
      std::vector<double> a, b;
      for (const auto& j : judgements) {
        double pa = 0, pb = 0;
        if (j && !j->preferences.empty()) (j->preferences[0].preferred == 0 ? pa : pb) = 1;
        a.push_back(pa);
        b.push_back(pb);
      }
      ASSIGN_OR_RETURN(noisy, task::ComputeWinRate(a, b, wo));
    }
    // KL(PPO || SFT) per response, from the sampling log-probs and the reference's.
    std::vector<const Sample*> rows;
    for (size_t i = 0; i < n; ++i) {
      if (!ppo[i].ids.empty()) rows.push_back(&ppo[i]);
    }
    double kl = 0;
    const float temperature =
        cfg_.evaluation().sampling().has_temperature() && cfg_.evaluation().sampling().temperature() > 0
            ? cfg_.evaluation().sampling().temperature()
            : 1.0f;
    for (size_t start = 0; start < rows.size(); start += 256) {
      std::vector<const Sample*> part(rows.begin() + start, rows.begin() + std::min(rows.size(), start + 256));
      ASSIGN_OR_RETURN(auto ref, ReferenceLogProbs(part, temperature));
      for (size_t i = 0; i < part.size(); ++i) {
        for (size_t t = 0; t < part[i]->logprobs.size() && t < ref[i].size(); ++t) kl += part[i]->logprobs[t] - ref[i][t];
      }
    }
    const double mean_kl = rows.empty() ? 0.0 : kl / static_cast<double>(rows.size());
    ASSIGN_OR_RETURN(task::ScoreSummary sft_summary, task::SummarizeScores(sft_scores));
    ASSIGN_OR_RETURN(task::ScoreSummary ppo_summary, task::SummarizeScores(ppo_scores));
    task::EvalSummary summary = task::MakeEvalSummary(noiseless, noisy, sft_summary, ppo_summary, mean_kl);
    RETURN_IF_ERROR(task::WriteEvalSummary(Path("eval/summary.json"), summary));
    RETURN_IF_ERROR(task::WriteEvalSamples(Path("eval/samples.jsonl"), samples));
    v1::EvaluationSummary* e = run_->mutable_evaluation();
    e->set_win_rate(noiseless.win_rate);
    e->set_win_rate_ci_low(noiseless.ci_low);
    e->set_win_rate_ci_high(noiseless.ci_high);
    e->set_confidence_level(noiseless.confidence_level);
    e->set_mean_kl(mean_kl);
    e->set_num_prompts(static_cast<int32_t>(n));
    e->set_tie_rate(static_cast<double>(noiseless.ties) / static_cast<double>(n));
    e->set_judge(files_.builtin_task ? "the built-in task's scorer (noiseless labeler)" : "the run's reward model");
    (*e->mutable_metrics())["sft/mean_score"] = sft_summary.mean_score;
    (*e->mutable_metrics())["ppo/mean_score"] = ppo_summary.mean_score;
    (*e->mutable_metrics())["sft/perfect_fraction"] = sft_summary.perfect_fraction;
    (*e->mutable_metrics())["ppo/perfect_fraction"] = ppo_summary.perfect_fraction;
    if (noisy) {
      (*e->mutable_metrics())["noisy/win_rate"] = noisy->win_rate;
      (*e->mutable_metrics())["noisy/ci_low"] = noisy->ci_low;
      (*e->mutable_metrics())["noisy/ci_high"] = noisy->ci_high;
    }
    std::map<std::string, double> metrics = {{"eval/win_rate", noiseless.win_rate},
                                             {"eval/ci_low", noiseless.ci_low},
                                             {"eval/ci_high", noiseless.ci_high},
                                             {"eval/kl_to_sft", mean_kl},
                                             {"eval/sft_mean_score", sft_summary.mean_score},
                                             {"eval/ppo_mean_score", ppo_summary.mean_score}};
    RETURN_IF_ERROR(LogMetrics(v1::STAGE_EVALUATION, 0, static_cast<int64_t>(n), metrics));
    RETURN_IF_ERROR(metrics_->Flush());
    Emit(v1::STAGE_EVALUATION, 0, static_cast<int64_t>(n), static_cast<int64_t>(n), metrics,
         absl::StrCat("PPO vs SFT win-rate ", noiseless.win_rate));
    progress_.evaluated = true;
    return SaveProgress();
  }

  const RunContext& ctx_;
  v1::Run* run_;
  const v1::RunConfig& cfg_;
  Progress progress_;
  RunFiles files_;
  std::unique_ptr<data::JsonlAppender> metrics_;
  std::vector<data::PromptRecord> comparison_prompts_, ppo_prompts_, eval_prompts_;
  std::unique_ptr<v1::PolicyGenerationService::Stub> generation_;
  std::unique_ptr<v1::ReferenceLogprobService::Stub> reference_;
  std::unique_ptr<v1::RewardScoringService::Stub> reward_;
  std::unique_ptr<v1::PpoTrainerService::Stub> trainer_;
  int64_t reward_version_ = 0;       // lowest version the reward replicas reported at the last reload
  std::string reward_checkpoint_;    // the reward model they reloaded
  int64_t policy_version_ = 0;       // lowest version the generation replicas reported at the last update
  std::function<absl::Status()> resync_policy_;  // repeats the last policy update
  int64_t reference_version_ = 0;    // lowest version the reference replicas reported at the last load
  int64_t trainer_version_ = 0;      // the trainer's policy version after our last call that set it; 0: unknown
  int run_lock_fd_ = -1;             // flock'd <run_dir>/.lock
};

}  // namespace

const char* StageName(v1::Stage stage) {
  switch (stage) {
    case v1::STAGE_PRETRAIN: return "pretrain";
    case v1::STAGE_SFT: return "sft";
    case v1::STAGE_COMPARISONS: return "comparisons";
    case v1::STAGE_REWARD_MODEL: return "reward_model";
    case v1::STAGE_PPO: return "ppo";
    case v1::STAGE_EVALUATION: return "eval";
    default: return "unknown";
  }
}

absl::Status CheckServices(const RunContext& context) {
  const v1::ServiceAddresses& s = context.config.services();
  const std::pair<const char*, std::pair<std::string, std::string>> services[] = {
      {"generation", {s.generation(), "rlhf.v1.PolicyGenerationService"}},
      {"reference", {s.reference(), "rlhf.v1.ReferenceLogprobService"}},
      {"reward", {s.reward(), "rlhf.v1.RewardScoringService"}},
      {"trainer", {s.trainer(), "rlhf.v1.PpoTrainerService"}},
      {"labeling", {s.labeling(), "rlhf.v1.LabelingService"}}};
  for (const auto& [name, target] : services) {
    if (target.first.empty() && std::string(name) == "labeling") continue;  // only human_queue runs need it
    runtime::ClientOptions o = context.client;
    o.target = target.first;
    ASSIGN_OR_RETURN(auto channel, runtime::MakeChannel(o));
    auto health = runtime::CheckHealth(*channel, target.second, absl::Seconds(10));
    if (!health.ok() || *health != runtime::HealthState::kServing) {
      return absl::FailedPreconditionError(
          absl::StrCat("the ", name, " service at ", target.first, " is not serving",
                       health.ok() ? "" : absl::StrCat(": ", health.status().message())));
    }
  }
  return absl::OkStatus();
}

bool ResumableError(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsAborted(status);
}

absl::Status DriveRun(const RunContext& context, v1::Run* run) {
  Driver driver(context, run);
  return driver.Run();
}

}  // namespace rlhf::orchestrator
