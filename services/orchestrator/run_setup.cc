#include "services/orchestrator/run_setup.h"


#include "absl/strings/str_cat.h"
#include "common/model/causal_lm.h"
#include "common/task/builtin_task.h"
#include "common/tokenizer/byte_tokenizer.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"
#include "services/orchestrator/run_config.h"

namespace rlhf::orchestrator {
RunFiles RunFilesFor(const v1::RunConfig& config, const std::string& run_dir) {
  RunFiles f;
  f.run_dir = run_dir;
  f.builtin_task = !config.task().builtin_task().empty();
  if (f.builtin_task) {
    const task::BuiltinTaskFiles t = task::BuiltinTaskFilesIn(run_dir + "/data");
    f.sft_data = t.demonstrations;
    f.comparison_prompts = t.rm_prompts;
    f.ppo_prompts = t.ppo_prompts;
    f.eval_prompts = t.eval_prompts;
    f.pretraining = t.pretraining;
  } else {
    f.sft_data = config.task().sft_data_path();
    f.comparison_prompts = config.task().prompts_path();
    f.ppo_prompts = config.task().prompts_path();
    f.eval_prompts = config.task().eval_prompts_path();
    f.pretraining = config.task().pretrain_text_path();
  }
  f.init_model = config.model().has_config() ? run_dir + "/models/init" : config.model().base_model_dir();
  f.init_reward_model = run_dir + "/models/init-reward";
  return f;
}

absl::StatusOr<RunFiles> PrepareRun(const v1::RunConfig& config, const std::string& run_dir) {
  RunFiles f = RunFilesFor(config, run_dir);
  RETURN_IF_ERROR(util::MakeDirectories(run_dir));
  std::string tokenizer_json;  // tokenizer.json to put beside a model made from a config
  if (f.builtin_task) {
    const task::BuiltinTaskFiles t = task::BuiltinTaskFilesIn(run_dir + "/data");
    if (!util::PathExists(t.task_json)) {
      task::BuiltinTaskOptions options;
      options.seed = config.seed();
      RETURN_IF_ERROR(task::WriteBuiltinTask(run_dir + "/data", options).status());
    }
    tokenizer_json = t.tokenizer;
  } else {
    for (const auto& [field, path] : {std::pair<const char*, std::string>{"task.sft_data_path", f.sft_data},
                                      {"task.prompts_path", f.ppo_prompts}}) {
      if (!util::PathExists(path)) return absl::NotFoundError(absl::StrCat("config.", field, ": ", path, " does not exist"));
    }
  }
  model::ModelOptions options;
  options.init_seed = config.seed();
  if (config.model().has_config() && !util::PathExists(f.init_model + "/model.safetensors")) {
    std::unique_ptr<tokenizer::Tokenizer> tok;
    if (tokenizer_json.empty()) {
      ASSIGN_OR_RETURN(auto bytes, tokenizer::ByteTokenizer::Create());
      RETURN_IF_ERROR(util::MakeDirectories(f.init_model));
      RETURN_IF_ERROR(bytes->Save(f.init_model + "/tokenizer.json"));
    } else {
      RETURN_IF_ERROR(util::MakeDirectories(f.init_model));
      RETURN_IF_ERROR(util::CopyFileAtomically(tokenizer_json, f.init_model + "/tokenizer.json"));
    }
    ASSIGN_OR_RETURN(tok, tokenizer::LoadTokenizer(f.init_model));
    const v1::ModelConfig& m = config.model().config();
    ASSIGN_OR_RETURN(model::ModelConfig c, ModelArchitecture(m));
    c.vocab_size = tok->VocabSize();
    if (tok->EosId()) c.eos_token_ids = {*tok->EosId()};
    if (tok->PadId()) c.pad_token_id = *tok->PadId();
    ASSIGN_OR_RETURN(std::unique_ptr<model::CausalLm> init, model::CreateModel(c, options));
    RETURN_IF_ERROR(init->Save(f.init_model, {{"rlhf.stage", "init"}}));
  }
  if (!util::PathExists(f.init_reward_model + "/model.safetensors")) {
    options.reward_head = true;
    ASSIGN_OR_RETURN(std::unique_ptr<model::CausalLm> rm, model::LoadModel(f.init_model, options));
    RETURN_IF_ERROR(rm->Save(f.init_reward_model, {{"rlhf.stage", "init"}}));
    RETURN_IF_ERROR(tokenizer::CopyTokenizerFiles(f.init_model, f.init_reward_model));
  }
  const std::string marker = absl::StrCat(run_dir, "/", kPreparedRunMarker);
  if (!util::PathExists(marker)) {
    const nlohmann::json contents = {{"init_model", f.init_model}, {"init_reward_model", f.init_reward_model}};
    RETURN_IF_ERROR(util::WriteFileAtomically(
        marker, contents.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"));
  }
  return f;
}

bool IsNewRunFolder(const std::string& run_dir) {
  return util::IsEmptyOrMissingDirectory(run_dir) || util::PathExists(absl::StrCat(run_dir, "/", kPreparedRunMarker));
}

}  // namespace rlhf::orchestrator
