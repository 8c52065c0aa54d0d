#include "services/orchestrator/run_config.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"

namespace rlhf::orchestrator {
namespace {

absl::Status Bad(const std::string& field, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat("config.", field, ": ", reason));
}

void DefaultOptimizer(v1::OptimizerConfig* o, double lr) {
  if (o->learning_rate() == 0) o->set_learning_rate(lr);
}

absl::Status CheckOptimizer(const v1::OptimizerConfig& o, const std::string& field) {
  if (o.learning_rate() < 0) return Bad(field + ".learning_rate", "must be >= 0");
  if (o.warmup_steps() < 0) return Bad(field + ".warmup_steps", "must be >= 0");
  if (o.has_min_lr_ratio() && !(o.min_lr_ratio() >= 0 && o.min_lr_ratio() <= 1)) {
    return Bad(field + ".min_lr_ratio", "must be in [0, 1]");
  }
  if (o.weight_decay() < 0) return Bad(field + ".weight_decay", "must be >= 0");
  if (o.max_grad_norm() < 0) return Bad(field + ".max_grad_norm", "must be >= 0");
  if (o.grad_accumulation_steps() < 0) return Bad(field + ".grad_accumulation_steps", "must be >= 0");
  return absl::OkStatus();
}

absl::Status CheckSampling(const v1::SamplingParams& s, const std::string& field) {
  if (s.has_temperature() && !(s.temperature() >= 0 && s.temperature() <= 100)) {
    return Bad(field + ".temperature", "must be in [0, 100]");
  }
  if (s.top_k() < 0) return Bad(field + ".top_k", "must be >= 0");
  if (!(s.top_p() >= 0 && s.top_p() <= 1)) return Bad(field + ".top_p", "must be in [0, 1]");
  if (s.max_new_tokens() < 0) return Bad(field + ".max_new_tokens", "must be >= 0");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::RunConfig> ReadRunConfig(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, util::ReadFile(path));
  v1::RunConfig config;
  if (absl::EndsWith(path, ".json")) {
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;
    auto status = google::protobuf::util::JsonStringToMessage(text, &config, options);
    if (!status.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a RunConfig in protobuf JSON: ", status.message().as_string()));
    }
    return config;
  }
  struct Collector : google::protobuf::io::ErrorCollector {
    std::string first;
    void AddError(int line, int column, const std::string& message) override {
      if (first.empty()) first = absl::StrCat(line + 1, ":", column + 1, ": ", message);
    }
  } errors;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &config)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", errors.first));
  }
  return config;
}

v1::RunConfig DefaultRunConfig() {
  v1::RunConfig config;
  config.set_display_name("built-in instructions task");
  config.mutable_task()->set_builtin_task(kBuiltinTaskName);
  return WithDefaults(config);
}

v1::RunConfig WithDefaults(const v1::RunConfig& in) {
  v1::RunConfig c = in;
  const bool builtin = !c.task().builtin_task().empty();
  if (c.rounds() == 0) c.set_rounds(1);
  if (c.seed() == 0) c.set_seed(1);
  // Model: for the built-in task, 2 layers x 128 wide (DESIGN.md: 64 wide was too small).
  // A config naming only a family (`model { config { model_type: "qwen3" } }`) gets the same shape.
  if ((c.model().has_config() || c.model().base_model_dir().empty()) && builtin) {
    v1::ModelConfig* m = c.mutable_model()->mutable_config();
    if (m->n_layer() == 0) m->set_n_layer(2);
    if (m->n_embd() == 0) m->set_n_embd(128);
    if (m->n_head() == 0) m->set_n_head(4);
    if (m->n_positions() == 0) m->set_n_positions(32);
  }
  if (c.model().has_config()) {
    v1::ModelConfig* m = c.mutable_model()->mutable_config();
    const bool gpt2 = m->model_type().empty() || m->model_type() == "gpt2";
    if (m->layer_norm_epsilon() == 0 && gpt2) m->set_layer_norm_epsilon(1e-5);  // others: their family's
  }
  if (c.model().tokenizer() == v1::TOKENIZER_KIND_UNSPECIFIED) {
    c.mutable_model()->set_tokenizer(builtin ? v1::TOKENIZER_KIND_WORD : v1::TOKENIZER_KIND_BYTE);
  }
  // SFT.
  v1::SftStage* sft = c.mutable_sft();
  if (sft->validation_fraction() == 0) sft->set_validation_fraction(0.05f);
  v1::SftHyperParams* sh = sft->mutable_hparams();
  if (sh->epochs() == 0) sh->set_epochs(builtin ? 12 : 16);
  if (sh->batch_size() == 0) sh->set_batch_size(64);
  if (!sh->has_dropout()) sh->set_dropout(builtin ? 0.0f : 0.2f);
  DefaultOptimizer(sh->mutable_optimizer(), builtin ? 1e-3 : 1e-5);
  if (sh->seed() == 0) sh->set_seed(c.seed());
  // Comparisons.
  v1::ComparisonStage* cmp = c.mutable_comparisons();
  if (cmp->num_prompts() == 0) cmp->set_num_prompts(3000);
  if (cmp->responses_per_prompt() == 0) cmp->set_responses_per_prompt(4);
  if (!cmp->sampling().has_temperature()) cmp->mutable_sampling()->set_temperature(1.0f);
  if (cmp->sampling().max_new_tokens() == 0) cmp->mutable_sampling()->set_max_new_tokens(builtin ? 12 : 64);
  // Reward model.
  v1::RewardModelStage* rm = c.mutable_reward_model();
  if (rm->validation_fraction() == 0) rm->set_validation_fraction(0.1f);
  v1::RewardModelHyperParams* rh = rm->mutable_hparams();
  if (rh->epochs() == 0) rh->set_epochs(builtin ? 2 : 1);
  if (rh->prompts_per_batch() == 0) rh->set_prompts_per_batch(builtin ? 16 : 64);
  DefaultOptimizer(rh->mutable_optimizer(), builtin ? 5e-4 : 9e-6);
  if (rh->seed() == 0) rh->set_seed(c.seed());
  // PPO.
  v1::PpoStage* ppo = c.mutable_ppo();
  if (ppo->iterations() == 0) ppo->set_iterations(150);
  if (ppo->prompts_per_iteration() == 0) ppo->set_prompts_per_iteration(64);
  if (!ppo->sampling().has_temperature()) ppo->mutable_sampling()->set_temperature(1.0f);
  if (ppo->sampling().max_new_tokens() == 0) ppo->mutable_sampling()->set_max_new_tokens(builtin ? 12 : 64);
  v1::PpoHyperParams* ph = ppo->mutable_hparams();
  if (!ph->kl().has_beta()) ph->mutable_kl()->set_beta(builtin ? 0.1 : 0.02);
  if (ph->ppo_epochs() == 0) ph->set_ppo_epochs(builtin ? 4 : 1);
  if (ph->minibatch_size() == 0) ph->set_minibatch_size(builtin ? 32 : 64);
  if (!ph->has_value_loss_coef()) ph->set_value_loss_coef(builtin ? 1.0 : 0.1);
  if (ph->no_stop_token_penalty() == 0) ph->set_no_stop_token_penalty(-1.0);
  if (!ph->has_sampling_temperature()) ph->set_sampling_temperature(ppo->sampling().temperature());
  DefaultOptimizer(ph->mutable_policy_optimizer(), builtin ? 2e-5 : 1e-5);
  DefaultOptimizer(ph->mutable_value_optimizer(), builtin ? 1e-4 : 5e-5);
  if (ph->seed() == 0) ph->set_seed(c.seed());
  // Evaluation.
  v1::EvaluationStage* ev = c.mutable_evaluation();
  if (ev->num_prompts() == 0) ev->set_num_prompts(2000);
  if (!ev->sampling().has_temperature()) ev->mutable_sampling()->set_temperature(1.0f);
  if (ev->sampling().max_new_tokens() == 0) ev->mutable_sampling()->set_max_new_tokens(builtin ? 12 : 64);
  if (ev->confidence_level() == 0) ev->set_confidence_level(0.95);
  // Labeler: simulated with InstructGPT-like disagreement for the built-in task.
  if (c.labeler().labeler_case() == v1::LabelerConfig::LABELER_NOT_SET && builtin) {
    c.mutable_labeler()->mutable_simulated()->set_noise_rate(0.25);
    c.mutable_labeler()->mutable_simulated()->set_seed(c.seed());
  }
  return c;
}

absl::Status ValidateRunConfig(const v1::RunConfig& c) {
  const bool builtin = !c.task().builtin_task().empty();
  if (builtin) {
    if (c.task().builtin_task() != kBuiltinTaskName) {
      return Bad("task.builtin_task", absl::StrCat("unknown task \"", c.task().builtin_task(), "\"; known: \"",
                                                   kBuiltinTaskName, "\""));
    }
    if (!c.task().sft_data_path().empty() || !c.task().prompts_path().empty() ||
        !c.task().eval_prompts_path().empty() || !c.task().pretrain_text_path().empty()) {
      return Bad("task", "builtin_task writes its own data: leave the data paths empty");
    }
  } else {
    if (c.task().sft_data_path().empty()) return Bad("task.sft_data_path", "required without builtin_task");
    if (c.task().prompts_path().empty()) return Bad("task.prompts_path", "required without builtin_task");
  }
  switch (c.model().source_case()) {
    case v1::ModelSource::kConfig: {
      const v1::ModelConfig& m = c.model().config();
      if (m.n_layer() <= 0) return Bad("model.config.n_layer", "must be > 0");
      if (m.n_embd() <= 0) return Bad("model.config.n_embd", "must be > 0");
      if (m.n_head() <= 0 || (m.head_dim() == 0 && m.n_embd() % m.n_head() != 0)) {
        return Bad("model.config.n_head", "must be > 0 and divide n_embd (or set head_dim)");
      }
      if (m.n_positions() <= 1) return Bad("model.config.n_positions", "must be > 1");
      RETURN_IF_ERROR(ModelArchitecture(m).status());
      if (builtin && c.model().tokenizer() != v1::TOKENIZER_KIND_WORD) {
        return Bad("model.tokenizer", "the built-in task uses its word tokenizer (TOKENIZER_KIND_WORD)");
      }
      if (!builtin && c.model().tokenizer() == v1::TOKENIZER_KIND_WORD) {
        return Bad("model.tokenizer", "a word tokenizer exists only for the built-in task");
      }
      break;
    }
    case v1::ModelSource::kBaseModelDir:
      if (c.model().base_model_dir().empty()) return Bad("model.base_model_dir", "is empty");
      if (builtin) return Bad("model.base_model_dir", "the built-in task trains its own word-level model");
      break;
    default:
      return Bad("model", "set config or base_model_dir");
  }
  if (c.rounds() < 1) return Bad("rounds", "must be >= 1");
  const v1::SftHyperParams& sh = c.sft().hparams();
  if (sh.epochs() < 1) return Bad("sft.hparams.epochs", "must be >= 1");
  if (sh.batch_size() < 1) return Bad("sft.hparams.batch_size", "must be >= 1");
  if (!(sh.dropout() >= 0 && sh.dropout() < 1)) return Bad("sft.hparams.dropout", "must be in [0, 1)");
  RETURN_IF_ERROR(CheckOptimizer(sh.optimizer(), "sft.hparams.optimizer"));
  if (!(c.sft().validation_fraction() >= 0 && c.sft().validation_fraction() <= 0.5)) {
    return Bad("sft.validation_fraction", "must be in [0, 0.5]");
  }
  if (c.sft().selection().criterion() == v1::CHECKPOINT_CRITERION_REWARD_SCORE &&
      c.sft().selection().reward_service_address().empty()) {
    return Bad("sft.selection.reward_service_address", "required for REWARD_SCORE");
  }
  const v1::ComparisonStage& cmp = c.comparisons();
  if (cmp.num_prompts() < 1) return Bad("comparisons.num_prompts", "must be >= 1");
  if (cmp.responses_per_prompt() < 2 || cmp.responses_per_prompt() > 9) {
    return Bad("comparisons.responses_per_prompt", "must be in [2, 9]");
  }
  RETURN_IF_ERROR(CheckSampling(cmp.sampling(), "comparisons.sampling"));
  RETURN_IF_ERROR(CheckOptimizer(c.reward_model().hparams().optimizer(), "reward_model.hparams.optimizer"));
  if (!(c.reward_model().validation_fraction() >= 0 && c.reward_model().validation_fraction() <= 0.5)) {
    return Bad("reward_model.validation_fraction", "must be in [0, 0.5]");
  }
  const v1::PpoStage& ppo = c.ppo();
  if (ppo.iterations() < 1) return Bad("ppo.iterations", "must be >= 1");
  if (ppo.prompts_per_iteration() < 2) return Bad("ppo.prompts_per_iteration", "must be >= 2");
  RETURN_IF_ERROR(CheckSampling(ppo.sampling(), "ppo.sampling"));
  if (ppo.sampling().temperature() == 0) return Bad("ppo.sampling.temperature", "PPO needs sampling (> 0)");
  // The trainer recomputes the rollouts' log-probs at the temperature they were sampled with; another value would
  // make every ratio wrong.
  if (ppo.hparams().has_sampling_temperature() &&
      ppo.hparams().sampling_temperature() != ppo.sampling().temperature()) {
    return Bad("ppo.hparams.sampling_temperature",
               absl::StrCat(ppo.hparams().sampling_temperature(), " differs from ppo.sampling.temperature ",
                            ppo.sampling().temperature(),
                            ": the rollouts' log-probs are recomputed at their sampling temperature; leave it unset"));
  }
  const v1::PpoHyperParams& ph = ppo.hparams();
  if (ph.kl().beta() < 0) return Bad("ppo.hparams.kl.beta", "must be >= 0");
  if (ph.kl().kind() == v1::KL_CONTROLLER_KIND_ADAPTIVE && !(ph.kl().target_kl() > 0)) {
    return Bad("ppo.hparams.kl.target_kl", "must be > 0 for the adaptive controller");
  }
  if (ph.has_clip_range() && !(ph.clip_range() > 0)) return Bad("ppo.hparams.clip_range", "must be > 0");
  if (ph.has_gamma() && !(ph.gamma() >= 0 && ph.gamma() <= 1)) return Bad("ppo.hparams.gamma", "must be in [0, 1]");
  if (ph.has_gae_lambda() && !(ph.gae_lambda() >= 0 && ph.gae_lambda() <= 1)) {
    return Bad("ppo.hparams.gae_lambda", "must be in [0, 1]");
  }
  if (ph.ppo_epochs() < 1) return Bad("ppo.hparams.ppo_epochs", "must be >= 1");
  if (ph.minibatch_size() < 1) return Bad("ppo.hparams.minibatch_size", "must be >= 1");
  if (!(ph.policy_ema_decay() >= 0 && ph.policy_ema_decay() < 1)) {
    return Bad("ppo.hparams.policy_ema_decay", "must be in [0, 1)");
  }
  RETURN_IF_ERROR(CheckOptimizer(ph.policy_optimizer(), "ppo.hparams.policy_optimizer"));
  RETURN_IF_ERROR(CheckOptimizer(ph.value_optimizer(), "ppo.hparams.value_optimizer"));
  if (ppo.ptx_examples_per_rollout() < 0) return Bad("ppo.ptx_examples_per_rollout", "must be >= 0");
  if (ppo.ptx_examples_per_rollout() > 0 && !builtin && c.task().pretrain_text_path().empty()) {
    return Bad("ppo.ptx_examples_per_rollout", "needs task.pretrain_text_path");
  }
  const v1::EvaluationStage& ev = c.evaluation();
  if (ev.num_prompts() < 2) return Bad("evaluation.num_prompts", "must be >= 2");
  if (!(ev.confidence_level() > 0 && ev.confidence_level() < 1)) {
    return Bad("evaluation.confidence_level", "must be in (0, 1)");
  }
  RETURN_IF_ERROR(CheckSampling(ev.sampling(), "evaluation.sampling"));
  switch (c.labeler().labeler_case()) {
    case v1::LabelerConfig::kDataset:
      if (c.labeler().dataset().path().empty()) return Bad("labeler.dataset.path", "required");
      break;
    case v1::LabelerConfig::kSimulated:
      if (!builtin) return Bad("labeler.simulated", "the simulated labeler judges the built-in task only");
      if (!(c.labeler().simulated().noise_rate() >= 0 && c.labeler().simulated().noise_rate() <= 0.5)) {
        return Bad("labeler.simulated.noise_rate", "must be in [0, 0.5]");
      }
      break;
    case v1::LabelerConfig::kJudge:
      if (c.labeler().judge().reward_service_address().empty()) {
        return Bad("labeler.judge.reward_service_address", "required");
      }
      if (!(c.labeler().judge().noise_rate() >= 0 && c.labeler().judge().noise_rate() <= 0.5)) {
        return Bad("labeler.judge.noise_rate", "must be in [0, 0.5]");
      }
      break;
    case v1::LabelerConfig::kHumanQueue: {
      const v1::HumanQueueLabeler& h = c.labeler().human_queue();
      if (h.task_timeout().seconds() < 0 || h.task_timeout().nanos() < 0) {
        return Bad("labeler.human_queue.task_timeout", "must be >= 0");
      }
      if (h.max_wait().seconds() < 0 || h.max_wait().nanos() < 0) {
        return Bad("labeler.human_queue.max_wait", "must be >= 0");
      }
      if (h.min_completed() < 0) return Bad("labeler.human_queue.min_completed", "must be >= 0");
      if (h.min_completed() > c.comparisons().num_prompts()) {
        return Bad("labeler.human_queue.min_completed",
                   absl::StrCat("must be <= comparisons.num_prompts (", c.comparisons().num_prompts(), ")"));
      }
      if (c.services().labeling().empty()) {
        return Bad("services.labeling", "required with labeler.human_queue (rlhf run fills it with the labeling "
                                        "service it starts on loopback)");
      }
      break;
    }
    default:
      return Bad("labeler", "set one of dataset, simulated, judge, human_queue");
  }
  const v1::ServiceAddresses& s = c.services();
  for (const auto& [name, address] : {std::pair<const char*, const std::string*>{"generation", &s.generation()},
                                      {"reference", &s.reference()},
                                      {"reward", &s.reward()},
                                      {"trainer", &s.trainer()}}) {
    if (address->empty()) {
      return Bad(absl::StrCat("services.", name),
                 "required (rlhf run fills the addresses of the services it starts on loopback)");
    }
  }
  return absl::OkStatus();
}

namespace {

// Keeps the first difference MessageDifferencer reports, as "config.<path>: <run's> in the run, <requested>
// requested".
class FirstDifference : public google::protobuf::util::MessageDifferencer::Reporter {
 public:
  using SpecificField = google::protobuf::util::MessageDifferencer::SpecificField;
  void ReportAdded(const google::protobuf::Message&, const google::protobuf::Message& requested,
                   const std::vector<SpecificField>& path) override {
    Keep(path, "unset", Value(requested, path));
  }
  void ReportDeleted(const google::protobuf::Message& run, const google::protobuf::Message&,
                     const std::vector<SpecificField>& path) override {
    Keep(path, Value(run, path), "unset");
  }
  void ReportModified(const google::protobuf::Message& run, const google::protobuf::Message& requested,
                      const std::vector<SpecificField>& path) override {
    Keep(path, Value(run, path), Value(requested, path));
  }
  const std::string& text() const { return text_; }

 private:
  // The value at the end of `path`, as protobuf text (a message in brief, a scalar as it is). `message` is the one
  // holding the last field (MessageDifferencer passes the innermost messages), or the root of `path`.
  static std::string Value(const google::protobuf::Message& message_or_root, const std::vector<SpecificField>& path) {
    const google::protobuf::Message* message = &message_or_root;
    const bool innermost =
        path.back().field != nullptr && message->GetDescriptor() == path.back().field->containing_type();
    for (size_t i = 0; !innermost && i + 1 < path.size(); ++i) {
      const auto* reflection = message->GetReflection();
      const auto* field = path[i].field;
      if (field == nullptr || field->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) return "?";
      message = field->is_repeated() ? &reflection->GetRepeatedMessage(*message, field, path[i].index)
                                     : &reflection->GetMessage(*message, field);
    }
    const SpecificField& last = path.back();
    if (last.field == nullptr) return "?";
    std::string out;
    google::protobuf::TextFormat::Printer printer;
    printer.SetSingleLineMode(true);
    const int index = last.field->is_repeated() ? (last.index >= 0 ? last.index : last.new_index) : -1;
    printer.PrintFieldValueToString(*message, last.field, index, &out);
    if (out.size() > 60) out = out.substr(0, 57) + "...";
    return out;
  }
  void Keep(const std::vector<SpecificField>& path, const std::string& run, const std::string& requested) {
    if (!text_.empty()) return;
    std::string name = "config";
    for (const SpecificField& f : path) {
      if (f.field == nullptr) continue;
      absl::StrAppend(&name, ".", f.field->name());
      if (f.field->is_repeated() && f.index >= 0) absl::StrAppend(&name, "[", f.index, "]");
    }
    text_ = absl::StrCat(name, ": ", run, " in the run, ", requested, " requested");
  }
  std::string text_;
};

}  // namespace

std::string RunConfigDifference(const v1::RunConfig& run, const v1::RunConfig& requested) {
  v1::RunConfig a = run, b = requested;
  a.clear_services();
  b.clear_services();
  google::protobuf::util::MessageDifferencer differ;
  FirstDifference reporter;
  differ.ReportDifferencesTo(&reporter);
  if (differ.Compare(a, b)) return "";
  return reporter.text().empty() ? "config differs" : reporter.text();
}

std::vector<std::pair<std::string, std::string*>> ConfigPaths(v1::RunConfig* config) {
  std::vector<std::pair<std::string, std::string*>> paths = {
      {"config.task.sft_data_path", config->mutable_task()->mutable_sft_data_path()},
      {"config.task.prompts_path", config->mutable_task()->mutable_prompts_path()},
      {"config.task.eval_prompts_path", config->mutable_task()->mutable_eval_prompts_path()},
      {"config.task.pretrain_text_path", config->mutable_task()->mutable_pretrain_text_path()},
  };
  if (config->labeler().has_dataset()) {
    paths.push_back({"config.labeler.dataset.path", config->mutable_labeler()->mutable_dataset()->mutable_path()});
  }
  if (!config->model().base_model_dir().empty()) {
    paths.push_back({"config.model.base_model_dir", config->mutable_model()->mutable_base_model_dir()});
  }
  std::vector<std::pair<std::string, std::string*>> named;
  for (const auto& entry : paths) {
    if (!entry.second->empty()) named.push_back(entry);
  }
  return named;
}

absl::StatusOr<model::ModelConfig> ModelArchitecture(const v1::ModelConfig& m) {
  auto fail = [](const absl::Status& status) {
    return absl::InvalidArgumentError(absl::StrCat("config.model.config: ", status.message()));
  };
  absl::StatusOr<model::ModelConfig> c =
      model::ModelConfig::ForModelType(m.model_type().empty() ? "gpt2" : m.model_type());
  if (!c.ok()) return fail(c.status());
  if (m.num_key_value_heads() < 0 || m.head_dim() < 0 || m.intermediate_size() < 0) {
    return absl::InvalidArgumentError(
        "config.model.config: num_key_value_heads, head_dim and intermediate_size must be >= 0 (0: the default)");
  }
  c->SetShape(m.n_layer(), m.n_embd(), m.n_head(), m.num_key_value_heads(), m.head_dim(), m.intermediate_size());
  c->max_position_embeddings = m.n_positions();
  c->vocab_size = 1;  // the tokenizer's, set when the model is made
  if (m.layer_norm_epsilon() > 0) c->norm_eps = m.layer_norm_epsilon();
  c->resid_pdrop = m.resid_pdrop();
  c->embd_pdrop = m.embd_pdrop();
  c->attn_pdrop = m.attn_pdrop();
  if (absl::Status status = c->Validate(); !status.ok()) return fail(status);
  return c;
}

}  // namespace rlhf::orchestrator
