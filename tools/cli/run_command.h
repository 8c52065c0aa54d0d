// `rlhf run [CONFIG]`: the main job. Prepares the run directory (built-in task data, initial models), starts the
// suite's services on loopback unless the config names them, starts the run on the orchestrator, shows a progress
// bar per stage from WatchRun, prints the final table (win-rate with its confidence interval, KL to SFT) and the
// report's path, and stops the services it started. Running it again on the same --run_dir resumes the run.
#ifndef RLHF_TOOLS_CLI_RUN_COMMAND_H_
#define RLHF_TOOLS_CLI_RUN_COMMAND_H_

#include <string>

namespace rlhf::cli {

struct RunCommandOptions {
  std::string config_path;  // empty: the built-in task's defaults
  std::string run_dir = "runs/local";
  std::string bin_dir;      // where the service binaries are
  std::string orchestrator; // address of a running orchestrator; empty: start the suite locally
  double startup_timeout_seconds = 60;
};

// Returns the process exit code (0 when the run succeeded).
int RunCommand(const RunCommandOptions& options);

}  // namespace rlhf::cli

#endif  // RLHF_TOOLS_CLI_RUN_COMMAND_H_
