// Starts the suite's service binaries as child processes on loopback, for the embedded mode of `rlhf run`.
#ifndef RLHF_TOOLS_CLI_LOCAL_SERVICES_H_
#define RLHF_TOOLS_CLI_LOCAL_SERVICES_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace rlhf::cli {

struct LocalService {
  std::string name;          // e.g. "reward-scoring"
  std::string binary;        // path of the executable
  std::string grpc_service;  // full name health reports, e.g. "rlhf.v1.RewardScoringService"
  int port = 0;          // 0: StartLocalServices picks a free one (and keeps it on a restart)
  int metrics_port = 0;  // likewise
  pid_t pid = -1;
  std::string log_path;
  std::vector<std::string> args;  // flags besides the addresses, e.g. --model=DIR
};

// What the services of a local suite load and where they keep their state.
struct SuiteLayout {
  std::string policy_model;      // served by policy-generation and reference-logprob, and the trainer's first policy
  std::string reward_model;      // served by reward-scoring (a model with a reward head)
  std::string checkpoint_root;   // the trainer's default checkpoint folder
  std::string runs_root;         // the orchestrator's runs; must exist (the model services load checkpoints in it)
  std::string labeling_state_dir;  // the labeling service's journal (empty: in memory)
  // Whether the orchestrator resumes the unfinished runs under runs_root by itself when it starts (--resume). `rlhf
  // run` turns it off and resumes its run with StartRun, which gives the run the addresses of the services it just
  // started (a run resumed by itself would call the services of the previous `rlhf run`).
  bool resume_runs = true;
  // Further folders whose files the run names (its data, a base model), besides runs_root: the services may read
  // them (--path_roots). Each must exist.
  std::vector<std::string> extra_roots;
};

// The six services of the suite, with binaries looked up in `bin_dir`, in start order (the orchestrator last).
std::vector<LocalService> SuiteServices(const std::string& bin_dir, const SuiteLayout& layout);

// Picks a free loopback TCP port, below the kernel's ephemeral range when there is room (see local_services.cc).
absl::StatusOr<int> PickFreePort();

// Starts each service on 127.0.0.1 (on its port, or a free one when 0), logs to `log_dir/<name>.log`, then waits until each reports
// SERVING over grpc.health.v1 (up to `timeout`). On any failure stops what it started and names the service.
absl::Status StartLocalServices(std::vector<LocalService>& services, const std::string& log_dir,
                                absl::Duration timeout);

// SIGTERM to each started service, then waits up to `timeout` for each to exit; returns an error naming any that
// did not exit 0 (those still running then get SIGKILL).
absl::Status StopLocalServices(std::vector<LocalService>& services, absl::Duration timeout);

}  // namespace rlhf::cli

#endif  // RLHF_TOOLS_CLI_LOCAL_SERVICES_H_
