// Preparing a run directory before its services start: the built-in task's data (or the user's files), the initial
// policy (random from a config, or a pretrained directory) and an initial reward model (the same with a zero scalar
// head) for the reward service to boot with. Idempotent: what exists is kept, so `rlhf run` and the orchestrator
// may both call it, and a resumed run finds its files.
#ifndef RLHF_SERVICES_ORCHESTRATOR_RUN_SETUP_H_
#define RLHF_SERVICES_ORCHESTRATOR_RUN_SETUP_H_

#include <string>

#include "absl/status/statusor.h"
#include "rlhf/v1/orchestrator.pb.h"

namespace rlhf::orchestrator {

struct RunFiles {
  std::string run_dir;
  std::string sft_data;        // {"prompt", "response"}
  std::string comparison_prompts;  // {"prompt"}: sampled for comparisons
  std::string ppo_prompts;     // {"prompt"}
  std::string eval_prompts;    // {"prompt"}; empty: a split of ppo_prompts
  std::string pretraining;     // {"text"} or plain text; may be empty
  std::string init_model;      // the initial policy's directory
  std::string init_reward_model;  // the initial model with a zero reward head
  bool builtin_task = false;
};

// The file layout of `run_dir` for `config` (no I/O).
RunFiles RunFilesFor(const v1::RunConfig& config, const std::string& run_dir);

// Writes what is missing, and then the marker kPreparedRunMarker. InvalidArgument / NotFound naming the field or
// file at fault.
absl::StatusOr<RunFiles> PrepareRun(const v1::RunConfig& config, const std::string& run_dir);

// The file PrepareRun leaves in a folder it prepared for a run (task data, initial models): a new run may start in
// such a folder, while one that holds anything else is refused (StartRun never takes over a user's folder).
inline constexpr char kPreparedRunMarker[] = "prepared-run.json";

// Empty or missing, or prepared by PrepareRun.
bool IsNewRunFolder(const std::string& run_dir);

}  // namespace rlhf::orchestrator

#endif  // RLHF_SERVICES_ORCHESTRATOR_RUN_SETUP_H_
