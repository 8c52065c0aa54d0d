// Drives one run through InstructGPT's loop against the services named in its config: SFT on demonstrations; then,
// for each round, comparisons sampled from the newest policy and judged by the labeler, a reward model trained on
// them, and PPO iterations (rollouts from the generation service, reference log-probs, reward scores, a trainer
// step, the new weights pushed back to the generation service); finally the evaluation of PPO against SFT on
// held-out prompts and the report.
//
// Everything a run has done is in its directory: progress.json (which steps are complete, the checkpoints to resume
// from), metrics.jsonl, comparisons/, checkpoints/, eval/ and report.html. Writes are atomic. Run() on a directory
// that holds progress resumes after the last completed step: a kill at any point loses at most the stage in progress
// (or, in PPO, the iterations since the last trainer checkpoint), which is redone with its metrics lines replaced,
// not duplicated. Every service is brought back to the run's state on resume (the trainer reloads its checkpoint,
// generation, reference and reward reload theirs), and a service found to have restarted mid-stage (its model
// version went back) stops the attempt with a ResumableError.
#ifndef RLHF_SERVICES_ORCHESTRATOR_RUN_DRIVER_H_
#define RLHF_SERVICES_ORCHESTRATOR_RUN_DRIVER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "common/runtime/client.h"
#include "rlhf/v1/orchestrator.pb.h"

namespace rlhf::orchestrator {

namespace v1 = ::rlhf::v1;

struct RunContext {
  std::string run_id;
  std::string run_dir;
  v1::RunConfig config;            // with defaults, validated
  runtime::ClientOptions client;   // TLS and token for calls to the services (target set per service)
  int32_t checkpoint_every = 5;    // PPO iterations between trainer checkpoints
  absl::Duration rpc_timeout = absl::Minutes(30);  // per call to a service
  // Receives progress; called from the run's thread.
  std::function<void(const v1::RunEvent&)> emit;
  // Polled between steps: true stops the run with CANCELLED.
  std::function<bool()> cancelled;
};

// Runs (or resumes) the run. OK when it finished; CANCELLED when asked to stop; another error names the stage and
// the service or file at fault (RESOURCE_EXHAUSTED for a full disk). Fills `*run` (stage, step, checkpoints,
// evaluation) as it goes. Before it returns OK it removes the temporary files that writers killed mid-write left in
// the run directory. One DriveRun at a time per run directory: FAILED_PRECONDITION when another holds it.
absl::Status DriveRun(const RunContext& context, v1::Run* run);

// Whether DriveRun's error is one the run gets over by resuming from its last completed step once the services
// answer again: a service unavailable (restarting, or busy with a call of a previous orchestrator) or one that lost
// what the run had given it (ABORTED: a restarted trainer, a reference service serving its initial model).
bool ResumableError(const absl::Status& status);

// The services the run needs, by name and address; FailedPrecondition naming the first one that is not SERVING.
absl::Status CheckServices(const RunContext& context);

// The stage's short name in metrics.jsonl and metric labels: pretrain, sft, comparisons, reward_model, ppo, eval.
const char* StageName(v1::Stage stage);

}  // namespace rlhf::orchestrator

#endif  // RLHF_SERVICES_ORCHESTRATOR_RUN_DRIVER_H_
