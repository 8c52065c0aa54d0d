#include "services/ppo_trainer/trainer_engine.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>

#include <c10/core/GradMode.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/data/jsonl_reader.h"
#include "common/data/split.h"
#include "common/model/causal_lm.h"
#include "common/model/safetensors.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace rlhf::trainer {
namespace {

constexpr char kPolicyDir[] = "policy";
constexpr char kValueDir[] = "value";
constexpr char kStateTensors[] = "trainer_state.safetensors";
constexpr char kStateJson[] = "trainer_state.json";
absl::Status CopyTokenizerFiles(const std::string& from, const std::string& to) {
  if (from.empty()) return absl::OkStatus();
  return tokenizer::CopyTokenizerFiles(from, to);
}

int64_t DirectoryBytes(const std::string& dir) {
  int64_t total = 0;
  for (const char* name : {"model.safetensors", "config.json", kStateTensors, kStateJson}) {
    for (const std::string& sub : {std::string(), std::string("/") + kPolicyDir, std::string("/") + kValueDir}) {
      struct stat st;
      if (::stat(absl::StrCat(dir, sub, "/", name).c_str(), &st) == 0) total += st.st_size;
    }
  }
  return total;
}

// A data file's prompt: its text, or for a chat prompt its messages.
TextOrIds PromptOf(const std::string& prompt, const std::vector<data::ChatTurn>& messages) {
  TextOrIds out{true, prompt, {}, {}};
  for (const data::ChatTurn& turn : messages) out.messages.push_back({turn.role, turn.content});
  return out;
}

data::ReadOptions ReadOptionsFor(BadRecords policy, std::function<absl::Status()> keep_going) {
  data::ReadOptions o;
  o.policy = policy == BadRecords::kSkip ? data::BadRecordPolicy::kSkip : data::BadRecordPolicy::kFail;
  o.keep_going = std::move(keep_going);
  return o;
}

}  // namespace

struct TrainerEngine::State {
  std::shared_ptr<model::CausalLm> policy;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
  std::string tokenizer_dir;  // where the tokenizer files are, copied into every checkpoint
  // The chat template of the tokenizer's folder, or why there is none (chat prompts are refused with it).
  std::unique_ptr<tokenizer::ChatTemplate> chat_template;
  absl::Status chat_template_status = absl::NotFoundError("the policy has no tokenizer");
  std::string policy_source;
  absl::Time policy_loaded_at;
  int64_t policy_version = 0;
  std::shared_ptr<model::CausalLm> value;
  int64_t value_version = 0;
  int64_t reward_models = 0;
  int64_t sft_runs = 0;
  std::unique_ptr<training::PpoLearner> learner;
};

OperationLease::~OperationLease() {
  if (engine_ != nullptr) engine_->Release();
}

TrainerEngine::TrainerEngine(const TrainerEngineOptions& options) : options_(options) {}

TrainerEngine::~TrainerEngine() = default;

absl::StatusOr<std::unique_ptr<TrainerEngine>> TrainerEngine::Create(const TrainerEngineOptions& options) {
  if (options.checkpoint_root.empty()) return absl::InvalidArgumentError("--checkpoint_root must not be empty");
  if (options.max_rollouts <= 0) return absl::InvalidArgumentError("--max_rollouts must be > 0");
  std::unique_ptr<TrainerEngine> engine(new TrainerEngine(options));
  RETURN_IF_ERROR(util::MakeDirectories(options.checkpoint_root));
  const std::vector<std::string> roots =
      options.path_roots.empty() ? std::vector<std::string>{options.checkpoint_root} : options.path_roots;
  ASSIGN_OR_RETURN(engine->roots_, util::PathRoots::Create(roots, "--path_roots"));
  engine->state_ = std::make_unique<State>();
  if (!options.model_dir.empty()) RETURN_IF_ERROR(engine->LoadPolicy(options.model_dir));
  return engine;
}

absl::StatusOr<OperationLease> TrainerEngine::Acquire(const std::string& operation) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!operation_.empty()) {
    return absl::UnavailableError(
        absl::StrCat(operation_, " is running; the trainer runs one operation at a time: retry when it ends"));
  }
  operation_ = operation;
  return OperationLease(this);
}

void TrainerEngine::Release() {
  std::lock_guard<std::mutex> lock(mu_);
  operation_.clear();
}

absl::Status TrainerEngine::LoadPolicy(const std::string& dir) {
  model::ModelOptions mo;
  mo.device = c10::Device(options_.device);
  ASSIGN_OR_RETURN(std::unique_ptr<model::CausalLm> loaded, model::LoadModel(dir, mo));
  auto tok = tokenizer::LoadTokenizer(dir);
  if (!tok.ok() && !absl::IsNotFound(tok.status())) return tok.status();
  absl::StatusOr<std::unique_ptr<tokenizer::ChatTemplate>> chat_template =
      absl::NotFoundError("the policy has no tokenizer");
  if (tok.ok()) chat_template = tokenizer::ChatTemplate::Load(dir);
  std::lock_guard<std::mutex> lock(mu_);
  if (tok.ok()) {
    state_->tokenizer = *std::move(tok);
    state_->tokenizer_dir = dir;
    state_->chat_template.reset();
    state_->chat_template_status = chat_template.status();
    if (chat_template.ok()) state_->chat_template = *std::move(chat_template);
  } else if (state_->tokenizer && state_->policy &&
             state_->tokenizer->VocabSize() != loaded->config().vocab_size) {
    state_->tokenizer.reset();
    state_->tokenizer_dir.clear();
    state_->chat_template.reset();
    state_->chat_template_status = absl::NotFoundError("the policy has no tokenizer");
  }
  state_->policy = std::move(loaded);
  state_->policy_source = dir;
  state_->policy_loaded_at = absl::Now();
  ++state_->policy_version;
  state_->learner.reset();
  return absl::OkStatus();
}

namespace {

v1::TextOrTokens ChatProto(const std::vector<tokenizer::ChatMessage>& messages) {
  v1::TextOrTokens out;
  for (const tokenizer::ChatMessage& m : messages) {
    v1::ChatMessage* message = out.mutable_messages()->add_messages();
    message->set_role(m.role);
    message->set_content(m.content);
  }
  return out;
}

}  // namespace

serving::PromptCodec TrainerEngine::ChatCodec() const {
  serving::PromptCodec codec;
  codec.tokenizer = state_->tokenizer.get();
  codec.chat_template = state_->chat_template.get();
  if (!codec.chat_template) codec.chat_template_status = state_->chat_template_status;
  return codec;
}

absl::StatusOr<std::vector<int64_t>> TrainerEngine::EncodePrompt(const TextOrIds& value, const std::string& field) const {
  if (!value.messages.empty()) return serving::EncodePrompt(ChatCodec(), ChatProto(value.messages), field);
  if (!value.is_text) {
    if (value.ids.empty()) return absl::InvalidArgumentError(field + ".token_ids is empty");
    return value.ids;
  }
  if (!state_->tokenizer) {
    return absl::InvalidArgumentError(field + ".text: the policy has no tokenizer; send token ids");
  }
  ASSIGN_OR_RETURN(std::vector<int32_t> ids, state_->tokenizer->EncodeOrdinary(value.text));
  if (ids.empty()) return absl::InvalidArgumentError(field + ".text encodes to no tokens");
  return std::vector<int64_t>(ids.begin(), ids.end());
}

absl::StatusOr<std::vector<int64_t>> TrainerEngine::EncodeResponse(const TextOrIds& prompt, const TextOrIds& value,
                                                                   const std::string& field) const {
  if (!value.messages.empty()) {
    return absl::InvalidArgumentError(field + ".messages: a response is text or token_ids (the conversation goes in "
                                      "the prompt)");
  }
  if (!value.is_text) return value.ids;
  if (!prompt.messages.empty()) {
    v1::TextOrTokens response;
    response.set_text(value.text);
    return serving::EncodeResponse(ChatCodec(), ChatProto(prompt.messages), response, std::nullopt, field);
  }
  if (!state_->tokenizer) {
    return absl::InvalidArgumentError(field + ".text: the policy has no tokenizer; send token ids");
  }
  ASSIGN_OR_RETURN(std::vector<int32_t> ids, state_->tokenizer->EncodeOrdinary(value.text));
  std::vector<int64_t> out(ids.begin(), ids.end());
  if (state_->tokenizer->EosId()) out.push_back(*state_->tokenizer->EosId());
  return out;
}

absl::Status TrainerEngine::SaveModelDir(const model::CausalLm& model, const std::string& dir,
                                         const std::map<std::string, std::string>& metadata) const {
  RETURN_IF_ERROR(model.Save(dir, metadata));
  return CopyTokenizerFiles(state_->tokenizer_dir, dir);
}

// ---------------------------------------------------------------------------------------------------------------
// SFT

absl::StatusOr<std::string> TrainerEngine::ReadablePath(const std::string& path, absl::string_view field) const {
  return roots_.Resolve(path, field);
}

absl::StatusOr<std::string> TrainerEngine::WritablePath(const std::string& path, absl::string_view field) const {
  return roots_.ResolveForWrite(path, field);
}

absl::Status TrainerEngine::ConfinePaths(SftJob* job) const {
  for (auto [path, field] : {std::pair{&job->data_path, "data_path"}, {&job->validation_path, "validation_path"},
                             {&job->init_model_path, "init_model_path"}}) {
    if (!path->empty()) {
      ASSIGN_OR_RETURN(*path, ReadablePath(*path, field));
    }
  }
  if (!job->output_dir.empty()) {
    ASSIGN_OR_RETURN(job->output_dir, WritablePath(job->output_dir, "output_dir"));
  }
  return absl::OkStatus();
}

absl::Status TrainerEngine::ConfinePaths(RewardJob* job) const {
  for (auto [path, field] : {std::pair{&job->comparisons_path, "comparisons_path"},
                             {&job->normalization_demonstrations_path, "normalization_demonstrations_path"},
                             {&job->init_model_path, "init_model_path"}}) {
    if (!path->empty()) {
      ASSIGN_OR_RETURN(*path, ReadablePath(*path, field));
    }
  }
  if (!job->output_dir.empty()) {
    ASSIGN_OR_RETURN(job->output_dir, WritablePath(job->output_dir, "output_dir"));
  }
  return absl::OkStatus();
}

absl::StatusOr<StageSummary> TrainerEngine::TrainSft(const SftJob& request, const training::ProgressSink& progress) {
  const absl::Time start = absl::Now();
  SftJob job = request;
  RETURN_IF_ERROR(ConfinePaths(&job));
  if (!job.init_model_path.empty()) RETURN_IF_ERROR(LoadPolicy(job.init_model_path));
  if (!state_->policy) {
    return absl::FailedPreconditionError("no policy loaded: pass init_model_path or start the trainer with --model");
  }
  StageSummary summary;
  std::vector<data::SftExample> records;
  std::vector<training::PromptResponse> train, validation;
  if (!job.data_path.empty()) {
    ASSIGN_OR_RETURN(data::SftReadResult read,
                     data::ReadSftExamples(job.data_path, ReadOptionsFor(job.bad_records, job.keep_going)));
    summary.records_skipped += static_cast<int64_t>(read.num_bad_records);
    records = std::move(read.records);
  }
  auto encode = [&](const TextOrIds& p, const TextOrIds& r, const std::string& field) -> absl::StatusOr<training::PromptResponse> {
    training::PromptResponse out;
    ASSIGN_OR_RETURN(out.prompt, EncodePrompt(p, field + ".prompt"));
    ASSIGN_OR_RETURN(out.response, EncodeResponse(p, r, field + ".response"));
    return out;
  };
  if (!records.empty()) {
    ASSIGN_OR_RETURN(data::DataSplit<data::SftExample> split,
                     data::SplitByPrompt(std::move(records), job.validation_path.empty() ? job.validation_fraction : 0,
                                         job.options.seed));
    for (size_t i = 0; i < split.train.size(); ++i) {
      ASSIGN_OR_RETURN(training::PromptResponse e,
                       encode(PromptOf(split.train[i].prompt, split.train[i].messages),
                              {true, split.train[i].response, {}, {}}, absl::StrCat(job.data_path, " record ", i)));
      train.push_back(std::move(e));
    }
    for (size_t i = 0; i < split.validation.size(); ++i) {
      ASSIGN_OR_RETURN(training::PromptResponse e,
                       encode(PromptOf(split.validation[i].prompt, split.validation[i].messages),
                              {true, split.validation[i].response, {}, {}},
                              absl::StrCat(job.data_path, " validation record ", i)));
      validation.push_back(std::move(e));
    }
  }
  for (size_t i = 0; i < job.inline_examples.size(); ++i) {
    ASSIGN_OR_RETURN(training::PromptResponse e, encode(job.inline_examples[i].first, job.inline_examples[i].second,
                                                        absl::StrCat("inline_data.examples[", i, "]")));
    train.push_back(std::move(e));
  }
  if (!job.inline_examples.empty() && job.validation_path.empty() && job.validation_fraction > 0) {
    // Inline data: hold out every k-th example (the records carry no prompt text to split by when given as ids).
    const size_t every = std::max<size_t>(2, static_cast<size_t>(1.0 / job.validation_fraction));
    std::vector<training::PromptResponse> kept;
    for (size_t i = 0; i < train.size(); ++i) (i % every == every - 1 ? validation : kept).push_back(std::move(train[i]));
    train = std::move(kept);
  }
  if (!job.validation_path.empty()) {
    ASSIGN_OR_RETURN(data::SftReadResult read,
                     data::ReadSftExamples(job.validation_path, ReadOptionsFor(job.bad_records, job.keep_going)));
    summary.records_skipped += static_cast<int64_t>(read.num_bad_records);
    for (size_t i = 0; i < read.records.size(); ++i) {
      ASSIGN_OR_RETURN(training::PromptResponse e,
                       encode(PromptOf(read.records[i].prompt, read.records[i].messages),
                              {true, read.records[i].response, {}, {}},
                              absl::StrCat(job.validation_path, " record ", i)));
      validation.push_back(std::move(e));
    }
  }
  if (train.empty()) return absl::InvalidArgumentError("no training demonstrations (data is empty after the split)");
  summary.train_examples = static_cast<int64_t>(train.size());
  summary.validation_examples = static_cast<int64_t>(validation.size());

  training::SftOptions options = job.options;
  const int64_t run = ++state_->sft_runs;
  options.checkpoint_dir = job.output_dir.empty() ? absl::StrCat(options_.checkpoint_root, "/sft-", run) : job.output_dir;
  const std::string tokenizer_dir = state_->tokenizer_dir;
  options.save_extra = [tokenizer_dir](const std::string& dir) { return CopyTokenizerFiles(tokenizer_dir, dir); };
  if (options.selection == training::EpochSelection::kScore) {
    if (!job.score_responses) return absl::InvalidArgumentError("selection by reward score needs a reward service");
    if (validation.empty()) return absl::InvalidArgumentError("selection by reward score needs validation prompts");
    std::vector<std::vector<int64_t>> prompts;
    const size_t limit = job.score_prompts > 0 ? static_cast<size_t>(job.score_prompts) : 256;
    for (size_t i = 0; i < validation.size() && prompts.size() < limit; ++i) prompts.push_back(validation[i].prompt);
    model::SamplingOptions sampling = job.score_sampling;
    if (sampling.eos_token_ids.empty() && state_->tokenizer && state_->tokenizer->EosId()) {
      sampling.eos_token_ids = {*state_->tokenizer->EosId()};
    }
    options.epoch_score = [prompts, sampling, &job](const model::CausalLm& model) -> absl::StatusOr<double> {
      ASSIGN_OR_RETURN(std::unique_ptr<model::Sampler> sampler, model::Sampler::Create(&model));
      ASSIGN_OR_RETURN(std::vector<model::GeneratedSequence> generated, sampler->Generate(prompts, sampling));
      std::vector<std::vector<int64_t>> responses;
      for (const auto& g : generated) responses.push_back(g.tokens);
      ASSIGN_OR_RETURN(std::vector<float> scores, job.score_responses(prompts, responses));
      if (scores.size() != prompts.size()) return absl::InternalError("the reward service returned too few scores");
      double sum = 0;
      for (float s : scores) sum += s;
      return sum / static_cast<double>(scores.size());
    };
  }
  ASSIGN_OR_RETURN(training::SftResult result, training::TrainSft(*state_->policy, train, validation, options, progress));
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++state_->policy_version;
    state_->policy_source = result.selected_checkpoint;
    state_->policy_loaded_at = absl::Now();
    state_->learner.reset();  // a new policy starts a new PPO optimiser
  }
  summary.model_id = {options_.policy_name, state_->policy_version};
  summary.checkpoint_path = result.selected_checkpoint;
  summary.selected_epoch = result.selected_epoch;
  summary.metrics = result.metrics;
  summary.elapsed = absl::Now() - start;
  return summary;
}

// ---------------------------------------------------------------------------------------------------------------
// Reward model

absl::StatusOr<StageSummary> TrainerEngine::TrainRewardModel(const RewardJob& request,
                                                             const training::ProgressSink& progress) {
  const absl::Time start = absl::Now();
  RewardJob job = request;
  RETURN_IF_ERROR(ConfinePaths(&job));
  StageSummary summary;
  // The model: the given checkpoint, or a copy of the current policy, with a zero-initialised scalar head.
  model::ModelOptions mo;
  mo.device = c10::Device(options_.device);
  mo.reward_head = true;
  std::unique_ptr<model::CausalLm> rm;
  if (!job.init_model_path.empty()) {
    ASSIGN_OR_RETURN(rm, model::LoadModel(job.init_model_path, mo));
  } else {
    if (!state_->policy) return absl::FailedPreconditionError("no policy loaded to start the reward model from");
    ASSIGN_OR_RETURN(rm, model::CreateModel(state_->policy->config(), mo));
    c10::NoGradGuard no_grad;
    const std::map<std::string, at::Tensor> from = state_->policy->StateDict();
    for (const model::NamedTensor& p : rm->NamedParameters()) {
      auto it = from.find(p.name);
      if (it != from.end()) p.tensor.copy_(it->second);
    }
  }
  {
    c10::NoGradGuard no_grad;  // InstructGPT: the LM head is replaced by a fresh scalar head
    for (const model::NamedTensor& p : rm->NamedParameters()) {
      if (p.name == "score.weight" || p.name == "score.bias") p.tensor.zero_();
    }
  }

  // Data: comparisons grouped by prompt (all pairs of a prompt in one batch), split by prompt.
  std::vector<data::Comparison> records;
  if (!job.comparisons_path.empty()) {
    ASSIGN_OR_RETURN(data::ComparisonReadResult read,
                     data::ReadComparisons(job.comparisons_path, ReadOptionsFor(job.bad_records, job.keep_going)));
    summary.records_skipped += static_cast<int64_t>(read.num_bad_records);
    records = std::move(read.records);
  }
  struct Pending {
    std::vector<int64_t> prompt;
    std::string prompt_key;
    std::vector<std::vector<int64_t>> responses;
    std::vector<int32_t> ranks;
  };
  std::vector<Pending> pending;
  for (size_t i = 0; i < records.size(); ++i) {
    Pending p;
    const TextOrIds prompt = PromptOf(records[i].prompt, records[i].messages);
    ASSIGN_OR_RETURN(p.prompt, EncodePrompt(prompt, absl::StrCat(job.comparisons_path, " record ", i)));
    p.prompt_key = records[i].prompt;
    for (const data::RankedResponse& r : records[i].responses) {
      ASSIGN_OR_RETURN(std::vector<int64_t> ids, EncodeResponse(prompt, {true, r.text, {}, {}}, "response"));
      p.responses.push_back(std::move(ids));
      p.ranks.push_back(r.rank);
    }
    pending.push_back(std::move(p));
  }
  for (size_t i = 0; i < job.inline_comparisons.size(); ++i) {
    const ComparisonItem& c = job.inline_comparisons[i];
    const std::string field = absl::StrCat("inline_comparisons.comparisons[", i, "]");
    if (c.responses.size() < 2) return absl::InvalidArgumentError(field + " has fewer than 2 responses");
    Pending p;
    ASSIGN_OR_RETURN(p.prompt, EncodePrompt(c.prompt, field + ".prompt"));
    p.prompt_key = !c.prompt.messages.empty() ? absl::StrCat("chat:", c.prompt.messages.size(), ":",
                                                             ChatProto(c.prompt.messages).SerializeAsString())
                   : c.prompt.is_text ? c.prompt.text
                                      : absl::StrCat("ids:", absl::StrJoin(c.prompt.ids, ","));
    bool any_pair = false;
    for (size_t j = 0; j < c.responses.size(); ++j) {
      if (c.responses[j].rank < 1) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".ranked[", j, "].rank must be >= 1"));
      }
      ASSIGN_OR_RETURN(std::vector<int64_t> ids,
                       EncodeResponse(c.prompt, c.responses[j].response,
                                      absl::StrCat(field, ".ranked[", j, "].response")));
      p.responses.push_back(std::move(ids));
      p.ranks.push_back(c.responses[j].rank);
      any_pair = any_pair || c.responses[j].rank != c.responses[0].rank;
    }
    if (!any_pair) return absl::InvalidArgumentError(field + ": all responses tie, so there is no pair to train on");
    pending.push_back(std::move(p));
  }
  // Merge records of the same prompt (e.g. pairwise records of one noisy labeler's judgements).
  std::map<std::string, size_t> by_prompt;
  std::vector<training::ComparisonGroup> groups;
  std::vector<std::string> group_prompts;
  for (Pending& p : pending) {
    auto [it, inserted] = by_prompt.emplace(p.prompt_key, groups.size());
    if (inserted) {
      groups.push_back({p.prompt, {}, {}});
      group_prompts.push_back(p.prompt_key);
    }
    training::ComparisonGroup& g = groups[it->second];
    std::vector<int32_t> index;
    for (auto& r : p.responses) {
      auto found = std::find(g.responses.begin(), g.responses.end(), r);
      if (found == g.responses.end()) {
        g.responses.push_back(r);
        index.push_back(static_cast<int32_t>(g.responses.size() - 1));
      } else {
        index.push_back(static_cast<int32_t>(found - g.responses.begin()));
      }
    }
    for (size_t a = 0; a < p.ranks.size(); ++a) {
      for (size_t b = a + 1; b < p.ranks.size(); ++b) {
        if (index[a] == index[b]) continue;
        if (p.ranks[a] < p.ranks[b]) g.pairs.push_back({index[a], index[b]});
        if (p.ranks[b] < p.ranks[a]) g.pairs.push_back({index[b], index[a]});
      }
    }
  }
  std::vector<training::ComparisonGroup> train, validation;
  for (size_t i = 0; i < groups.size(); ++i) {
    if (groups[i].pairs.empty()) continue;
    (data::IsValidationPrompt(group_prompts[i], job.validation_fraction, job.options.seed) ? validation : train)
        .push_back(std::move(groups[i]));
  }
  if (train.empty()) return absl::InvalidArgumentError("no training comparisons (data is empty after the split)");
  summary.train_examples = static_cast<int64_t>(train.size());
  summary.validation_examples = static_cast<int64_t>(validation.size());

  ASSIGN_OR_RETURN(training::RewardTrainingResult result,
                   training::TrainRewardModel(*rm, train, validation, job.options, progress));
  summary.metrics = result.metrics;
  if (!job.normalization_demonstrations_path.empty()) {
    ASSIGN_OR_RETURN(data::SftReadResult demos,
                     data::ReadSftExamples(job.normalization_demonstrations_path,
                                           ReadOptionsFor(job.bad_records, job.keep_going)));
    std::vector<training::PromptResponse> sequences;
    for (size_t i = 0; i < demos.records.size(); ++i) {
      training::PromptResponse e;
      const TextOrIds prompt = PromptOf(demos.records[i].prompt, demos.records[i].messages);
      ASSIGN_OR_RETURN(e.prompt, EncodePrompt(prompt, "demonstration"));
      ASSIGN_OR_RETURN(e.response, EncodeResponse(prompt, {true, demos.records[i].response, {}, {}}, "demonstration"));
      if (static_cast<int64_t>(e.prompt.size() + e.response.size()) <= rm->config().max_position_embeddings) {
        sequences.push_back(std::move(e));
      }
    }
    ASSIGN_OR_RETURN(summary.normalization_bias, training::NormalizeRewardModel(*rm, sequences));
  }
  const int64_t version = ++state_->reward_models;
  const std::string root = job.output_dir.empty() ? absl::StrCat(options_.checkpoint_root, "/reward") : job.output_dir;
  summary.checkpoint_path = absl::StrCat(root, "/rm-", version);
  if (util::PathExists(summary.checkpoint_path)) {
    summary.checkpoint_path = absl::StrCat(root, "/rm-", version, "-", absl::ToUnixMillis(absl::Now()));
  }
  RETURN_IF_ERROR(util::WriteDirectoryAtomically(summary.checkpoint_path, [&](const std::string& tmp) {
    return SaveModelDir(*rm, tmp,
                        {{"rlhf.stage", "reward_model"},
                         {"rlhf.normalization_bias", absl::StrCat(summary.normalization_bias)}});
  }));
  summary.model_id = {"reward", version};
  if (job.init_value_model) {
    model::ModelOptions vo = mo;
    vo.value_head = true;
    ASSIGN_OR_RETURN(std::unique_ptr<model::CausalLm> value, model::LoadModel(summary.checkpoint_path, vo));
    RETURN_IF_ERROR(training::InitValueHeadFromRewardHead(*value));
    std::lock_guard<std::mutex> lock(mu_);
    state_->value = std::move(value);
    ++state_->value_version;
    state_->learner.reset();
  }
  summary.elapsed = absl::Now() - start;
  return summary;
}

// ---------------------------------------------------------------------------------------------------------------
// PPO

absl::StatusOr<PpoOutcome> TrainerEngine::PpoStep(const PpoJob& job) {
  if (job.expected_policy_version && !state_->policy) {
    // A caller that expects a policy this trainer does not have (it restarted since) is told so, like any stale one.
    return absl::AbortedError(absl::StrCat("expected_policy_version is ", *job.expected_policy_version,
                                           " but no policy is loaded"));
  }
  if (!state_->policy) return absl::FailedPreconditionError("no policy loaded");
  if (!state_->value) {
    return absl::FailedPreconditionError(
        "no value model: train a reward model with init_value_model or LoadCheckpoint with role VALUE");
  }
  if (job.expected_policy_version && *job.expected_policy_version != state_->policy_version) {
    return absl::AbortedError(absl::StrCat("expected_policy_version is ", *job.expected_policy_version,
                                           " but the policy is at version ", state_->policy_version));
  }
  if (static_cast<int64_t>(job.rollouts.size()) > options_.max_rollouts) {
    return absl::InvalidArgumentError(absl::StrCat("rollouts has ", job.rollouts.size(), " entries, more than the limit ",
                                                   options_.max_rollouts));
  }
  training::PtxBatch ptx;
  ptx.gamma = job.gamma_ptx;
  for (size_t i = 0; i < job.ptx_examples.size(); ++i) {
    std::vector<int64_t> ids;
    if (job.ptx_examples[i].is_text) {
      ASSIGN_OR_RETURN(ids, EncodePrompt(job.ptx_examples[i], absl::StrCat("ptx.examples[", i, "]")));
    } else {
      ids = job.ptx_examples[i].ids;
    }
    if (static_cast<int64_t>(ids.size()) > state_->policy->config().max_position_embeddings) {
      ids.resize(state_->policy->config().max_position_embeddings);
    }
    ptx.sequences.push_back(std::move(ids));
  }
  if (!state_->learner) {
    ASSIGN_OR_RETURN(state_->learner, training::PpoLearner::Create(state_->policy, state_->value));
  }
  ASSIGN_OR_RETURN(training::PpoStepStats stats, state_->learner->Step(job.rollouts, job.options, ptx));
  std::lock_guard<std::mutex> lock(mu_);
  ++state_->policy_version;
  ++state_->value_version;
  return PpoOutcome{stats, {options_.policy_name, state_->policy_version}, {"value", state_->value_version}};
}

// ---------------------------------------------------------------------------------------------------------------
// Weights and checkpoints

absl::StatusOr<ExportedWeights> TrainerEngine::ExportWeights(LoadRole role, bool ema) {
  ExportedWeights out;
  if (role == LoadRole::kValue) {
    if (!state_->value) return absl::FailedPreconditionError("the trainer has no value model");
    if (ema) return absl::InvalidArgumentError("ema_weights applies to the policy only");
    ASSIGN_OR_RETURN(out.safetensors, model::SerializeSafetensors(state_->value->StateDict(), {{"format", "pt"}}));
    out.model_id = {"value", state_->value_version};
    out.config = state_->value->config();
    return out;
  }
  if (!state_->policy) return absl::FailedPreconditionError("no policy loaded");
  std::map<std::string, at::Tensor> tensors = state_->policy->StateDict();
  if (ema) {
    if (!state_->learner || state_->learner->ema_weights().empty()) {
      return absl::FailedPreconditionError("no EMA of the policy: set hparams.policy_ema_decay in PpoStep");
    }
    for (const auto& [name, tensor] : state_->learner->ema_weights()) tensors[name] = tensor;
  }
  ASSIGN_OR_RETURN(out.safetensors, model::SerializeSafetensors(tensors, {{"format", "pt"}}));
  out.model_id = {options_.policy_name, state_->policy_version};
  out.config = state_->policy->config();
  return out;
}

absl::StatusOr<CheckpointOutcome> TrainerEngine::SaveCheckpoint(const std::string& path,
                                                                const std::map<std::string, std::string>& metadata) {
  if (!state_->policy) return absl::FailedPreconditionError("no policy loaded: nothing to save");
  const int64_t step = state_->learner ? state_->learner->steps() : 0;
  CheckpointOutcome out;
  if (path.empty()) {
    out.path = absl::StrCat(options_.checkpoint_root, "/trainer-step-", step, "-v", state_->policy_version);
  } else {
    ASSIGN_OR_RETURN(out.path, WritablePath(path, "path"));
  }
  out.step = step;
  out.policy = {options_.policy_name, state_->policy_version};
  if (state_->value) out.value = {"value", state_->value_version};
  RETURN_IF_ERROR(util::WriteDirectoryAtomically(out.path, [&](const std::string& tmp) -> absl::Status {
    RETURN_IF_ERROR(SaveModelDir(*state_->policy, absl::StrCat(tmp, "/", kPolicyDir), {{"rlhf.role", "policy"}}));
    if (state_->value) {
      RETURN_IF_ERROR(SaveModelDir(*state_->value, absl::StrCat(tmp, "/", kValueDir), {{"rlhf.role", "value"}}));
    }
    nlohmann::json state = {{"format", 1},
                            {"step", step},
                            {"policy_version", state_->policy_version},
                            {"value_version", state_->value_version},
                            {"reward_models", state_->reward_models},
                            {"sft_runs", state_->sft_runs},
                            {"metadata", metadata}};
    if (state_->learner) {
      const training::PpoLearnerState s = state_->learner->State();
      state["ppo"] = {{"steps", s.steps},
                      {"policy_optimizer_steps", s.policy_optimizer_steps},
                      {"value_optimizer_steps", s.value_optimizer_steps},
                      {"kl_beta", s.kl.beta},
                      {"kl_total_steps", s.kl.total_steps},
                      {"kl_config", s.kl_config},
                      {"has_ema", s.has_ema}};
      std::map<std::string, at::Tensor> tensors = state_->learner->StateTensors();
      if (!tensors.empty()) {
        RETURN_IF_ERROR(model::WriteSafetensors(absl::StrCat(tmp, "/", kStateTensors), tensors));
      }
    }
    return util::WriteFileAtomically(absl::StrCat(tmp, "/", kStateJson), state.dump(2));
  }));
  out.total_bytes = DirectoryBytes(out.path);
  return out;
}

absl::StatusOr<CheckpointOutcome> TrainerEngine::LoadCheckpoint(const std::string& requested, LoadRole role) {
  ASSIGN_OR_RETURN(const std::string path, ReadablePath(requested, "path"));
  if (!util::IsDirectory(path)) {
    return absl::InvalidArgumentError(absl::StrCat("path: checkpoint ", requested, " is not a folder"));
  }
  CheckpointOutcome out;
  out.path = path;
  const std::string policy_dir = absl::StrCat(path, "/", kPolicyDir);
  const std::string value_dir = absl::StrCat(path, "/", kValueDir);
  const bool full = util::IsDirectory(policy_dir);
  model::ModelOptions mo;
  mo.device = c10::Device(options_.device);
  if (role == LoadRole::kPolicy) {
    RETURN_IF_ERROR(LoadPolicy(full ? policy_dir : path));
  } else if (role == LoadRole::kValue) {
    const std::string dir = util::IsDirectory(value_dir) ? value_dir : path;
    model::ModelOptions vo = mo;
    vo.value_head = true;
    ASSIGN_OR_RETURN(std::unique_ptr<model::SafetensorsFile> file,
                     model::SafetensorsFile::Open(absl::StrCat(dir, "/model.safetensors")));
    // A value checkpoint as it is; a reward model with its head copied into the value head (InstructGPT); a
    // language model (e.g. the policy) with a zero-initialised value head.
    const bool has_value = file->Contains("value_head.weight");
    const bool has_reward = file->Contains("score.weight");
    ASSIGN_OR_RETURN(std::unique_ptr<model::CausalLm> value, model::LoadModel(dir, vo));
    if (!has_value && has_reward) RETURN_IF_ERROR(training::InitValueHeadFromRewardHead(*value));
    if (state_->policy && value->config().vocab_size != state_->policy->config().vocab_size) {
      return absl::FailedPreconditionError("the value model's vocabulary differs from the policy's");
    }
    std::lock_guard<std::mutex> lock(mu_);
    state_->value = std::move(value);
    ++state_->value_version;
    state_->learner.reset();
  } else {
    if (!full) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " is not a trainer checkpoint (no policy/ directory); load it with role POLICY or VALUE"));
    }
    ASSIGN_OR_RETURN(std::string json_text, util::ReadFile(absl::StrCat(path, "/", kStateJson)));
    nlohmann::json state = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
    if (state.is_discarded() || !state.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, "/", kStateJson, " is not valid JSON"));
    }
    RETURN_IF_ERROR(LoadPolicy(policy_dir));
    std::unique_ptr<model::CausalLm> value;
    if (util::IsDirectory(value_dir)) {
      model::ModelOptions vo = mo;
      vo.value_head = true;
      ASSIGN_OR_RETURN(value, model::LoadModel(value_dir, vo));
    }
    std::lock_guard<std::mutex> lock(mu_);
    state_->value = std::move(value);
    state_->policy_version = std::max(state_->policy_version, state.value("policy_version", int64_t{1}));
    state_->value_version = std::max(state_->value_version + 1, state.value("value_version", int64_t{0}));
    state_->reward_models = state.value("reward_models", int64_t{0});
    state_->sft_runs = state.value("sft_runs", int64_t{0});
    state_->learner.reset();
    if (state.contains("ppo") && state_->value) {
      const nlohmann::json& ppo = state["ppo"];
      ASSIGN_OR_RETURN(state_->learner, training::PpoLearner::Create(state_->policy, state_->value));
      training::PpoLearnerState s;
      s.steps = ppo.value("steps", int64_t{0});
      s.policy_optimizer_steps = ppo.value("policy_optimizer_steps", int64_t{0});
      s.value_optimizer_steps = ppo.value("value_optimizer_steps", int64_t{0});
      s.kl.beta = ppo.value("kl_beta", 0.0);
      s.kl.total_steps = ppo.value("kl_total_steps", int64_t{0});
      s.kl_config = ppo.value("kl_config", std::string());
      s.has_ema = ppo.value("has_ema", false);
      std::map<std::string, at::Tensor> tensors;
      const std::string tensor_path = absl::StrCat(path, "/", kStateTensors);
      if (util::PathExists(tensor_path)) {
        ASSIGN_OR_RETURN(std::unique_ptr<model::SafetensorsFile> file, model::SafetensorsFile::Open(tensor_path));
        for (const std::string& name : file->Names()) {
          ASSIGN_OR_RETURN(at::Tensor t, file->Get(name));
          tensors[name] = t.to(c10::Device(options_.device));
        }
      }
      RETURN_IF_ERROR(state_->learner->Restore(tensors, s));
      out.step = s.steps;
    }
  }
  out.policy = {options_.policy_name, state_->policy_version};
  if (state_->value) out.value = {"value", state_->value_version};
  return out;
}

absl::StatusOr<PolicyInfo> TrainerEngine::GetPolicyInfo() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!state_->policy) return absl::FailedPreconditionError("no policy loaded");
  PolicyInfo info;
  info.id = {options_.policy_name, state_->policy_version};
  info.config = state_->policy->config();
  info.parameter_count = state_->policy->NumParameters();
  info.device = options_.device;
  info.source = state_->policy_source;
  info.loaded_at = state_->policy_loaded_at;
  if (state_->tokenizer) {
    info.tokenizer_kind = state_->tokenizer->Kind();
    info.tokenizer_vocab_size = state_->tokenizer->VocabSize();
    info.eos_id = state_->tokenizer->EosId();
    info.pad_id = state_->tokenizer->PadId();
  }
  return info;
}

}  // namespace rlhf::trainer
