// `rlhf run [CONFIG]`: the main job. Prepares the run directory (built-in task data, initial models), starts the
// suite's services on loopback unless the config names them, starts the run on the orchestrator, shows a progress
// bar per stage from WatchRun, prints the final table (win-rate with its confidence interval, KL to SFT) and the
// report's path, and stops the services it started. Running it again on the same --run_dir (or, on a cluster, with the
// same --run_id) resumes the run from its last completed step, or follows it when the orchestrator already drives it
// (or shows its results when it finished); another config under the same run is refused, naming what differs.
#ifndef RLHF_TOOLS_CLI_RUN_COMMAND_H_
#define RLHF_TOOLS_CLI_RUN_COMMAND_H_

#include <string>

#include "absl/status/statusor.h"

namespace rlhf::cli {

struct RunCommandOptions {
  std::string config_path;  // empty: the built-in task's defaults
  std::string run_dir = "runs/local";
  std::string bin_dir;      // where the service binaries are
  std::string orchestrator; // address of a running orchestrator; empty: start the suite locally
  std::string run_id;       // with `orchestrator`: the run to start or resume; empty: a new run with a new id
  std::string bearer_token; // sent to that orchestrator (its --auth_token_file's token)
  std::string tls_ca_file;  // PEM CA that signed its certificate: set to reach it over TLS
  double startup_timeout_seconds = 60;
};

// Returns the process exit code (0 when the run succeeded).
int RunCommand(const RunCommandOptions& options);

// `rlhf init-run-models --out=DIR [CONFIG]`: the initial models a run of CONFIG (default: the built-in task) starts
// from, as DIR/policy (the policy) and DIR/reward (the same with a zero reward head): what services started by hand
// (a cluster) must serve, since they take only checkpoints of the architecture they serve. A model already in DIR is
// kept. Each is moved into place whole (rename), so a crash leaves it complete or absent. Returns what it did.
absl::StatusOr<std::string> InitRunModels(const std::string& config_path, const std::string& out_dir);

}  // namespace rlhf::cli

#endif  // RLHF_TOOLS_CLI_RUN_COMMAND_H_
