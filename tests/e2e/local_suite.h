// The suite's service binaries as processes on loopback, driving one run of the built-in task: what the end-to-end
// tests start, kill, restart and watch. Also child-process helpers for tests that run the `rlhf` CLI itself.
#ifndef RLHF_TESTS_E2E_LOCAL_SUITE_H_
#define RLHF_TESTS_E2E_LOCAL_SUITE_H_

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rlhf/v1/orchestrator.grpc.pb.h"
#include "tools/cli/local_services.h"

namespace rlhf::e2e {

namespace v1 = ::rlhf::v1;

// The built-in task shortened to CI size: 30 SFT steps, 64 comparison prompts, `ppo_iterations` of 16 prompts, 32
// held-out prompts; defaults filled in. `model_type` names the policy's family ("gpt2" when empty).
v1::RunConfig ShortConfig(int32_t ppo_iterations, const std::string& model_type = "");

struct LocalSuiteOptions {
  std::string root;       // where runs/, logs/, trainer/ and labeling/ go; empty: a new temp folder
  std::string runs_root;  // the orchestrator's --runs_root; empty: <root>/runs
  int replicas = 1;       // generation and reward servers, behind one multi-address target each
  int checkpoint_every = 2;
};

// (stage, round, step) -> how many lines of metrics.jsonl have them.
using MetricLineCounts = std::map<std::tuple<std::string, int, int64_t>, int>;

class LocalSuite {
 public:
  // Prepares the run's files in <runs_root>/<run_id> (task data, initial models), starts the services (the
  // orchestrator last, with --checkpoint_every) and fills the config's service addresses.
  static absl::StatusOr<std::unique_ptr<LocalSuite>> Start(const v1::RunConfig& config, const std::string& run_id,
                                                           const LocalSuiteOptions& options = {});
  ~LocalSuite();  // stops every service still running

  const v1::RunConfig& config() const { return config_; }  // with the services' addresses
  const std::string& root() const { return root_; }
  const std::string& run_id() const { return run_id_; }
  const std::string& run_dir() const { return run_dir_; }
  std::vector<cli::LocalService>& services() { return services_; }
  cli::LocalService* Find(const std::string& name);
  std::string Address(const std::string& name);  // "127.0.0.1:<port>"
  v1::OrchestratorService::Stub& orchestrator() { return *orchestrator_; }

  // StartRun of this suite's run with `config` (default: config()).
  absl::StatusOr<v1::Run> StartRun();
  absl::StatusOr<v1::Run> StartRun(const v1::RunConfig& config);
  absl::StatusOr<v1::Run> GetRun();
  // Polls GetRun until the run is SUCCEEDED, FAILED or CANCELLED; DeadlineExceeded after `timeout`.
  absl::StatusOr<v1::Run> WaitForEnd(absl::Duration timeout);

  // SIGKILL, and reap. Restart starts it again on the same ports (and reconnects to a restarted orchestrator).
  absl::Status Kill(const std::string& name);
  absl::Status Restart(const std::string& name);

  MetricLineCounts MetricLines() const;
  // Sum of the samples of `metric` whose labels contain `label`, from a service's /metrics.
  absl::StatusOr<double> MetricSum(const std::string& service, const std::string& metric, const std::string& label);

 private:
  LocalSuite() = default;
  void Connect();
  std::string Targets(const std::string& name) const;

  std::string root_, run_dir_, run_id_;
  int restarts_ = 0;
  v1::RunConfig config_;
  std::vector<cli::LocalService> services_;
  std::unique_ptr<v1::OrchestratorService::Stub> orchestrator_;
};

// metrics.jsonl of `run_dir` as line counts; DataLoss naming the line for a line that is not JSON.
absl::StatusOr<MetricLineCounts> ReadMetricLines(const std::string& run_dir);

// Files and folders under `dir` with a temporary name of the atomic writers (util::IsTempName).
std::vector<std::string> TempFilesUnder(const std::string& dir);

// A child process with stdout and stderr going to one file.
class ChildProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Spawn(const std::vector<std::string>& argv,
                                                            const std::string& output_path);
  ~ChildProcess();  // SIGKILLs it when still running

  pid_t pid() const { return pid_; }
  // Waits for it to exit; its exit code (128 + signal when killed). DeadlineExceeded after `timeout` (it is then
  // still running).
  absl::StatusOr<int> Wait(absl::Duration timeout);
  std::string Output() const;

 private:
  ChildProcess(pid_t pid, std::string output_path) : pid_(pid), output_path_(std::move(output_path)) {}
  pid_t pid_;
  std::string output_path_;
  bool reaped_ = false;
};

// The pid of `parent`'s child process running the executable named `binary_name` (e.g. "rlhf-orchestrator");
// NotFound when there is none.
absl::StatusOr<pid_t> FindChild(pid_t parent, const std::string& binary_name);

}  // namespace rlhf::e2e

#endif  // RLHF_TESTS_E2E_LOCAL_SUITE_H_
