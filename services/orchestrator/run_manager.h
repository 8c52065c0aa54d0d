// The orchestrator's runs: starts each on its own thread, keeps its state (run.json in its directory, written
// atomically at every change of stage and checkpoint), its event history and its watchers, cancels on request, and
// on start-up resumes the runs a previous process left unfinished. A run whose service restarts mid-stage (or is busy
// with a previous orchestrator's call) resumes from its last completed step by itself once the service answers
// again. A run that meets a full disk fails with RESOURCE_EXHAUSTED, keeping everything it completed; StartRun again
// resumes it. Knows the services only through DriveRun.
#ifndef RLHF_SERVICES_ORCHESTRATOR_RUN_MANAGER_H_
#define RLHF_SERVICES_ORCHESTRATOR_RUN_MANAGER_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/runtime/client.h"
#include "common/util/path_roots.h"
#include "rlhf/v1/orchestrator.pb.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace rlhf::orchestrator {

namespace v1 = ::rlhf::v1;

struct RunContext;  // run_driver.h

struct RunManagerOptions {
  std::string runs_root = "runs";
  // Folders the files a run config names (data, a base model) must resolve into, symlinks followed; a config naming
  // a file elsewhere is refused with PERMISSION_DENIED. Empty: runs_root alone. A run's own folder (config.run_dir)
  // must lie in runs_root.
  std::vector<std::string> path_roots;
  runtime::ClientOptions client;  // how to reach the services (TLS, token)
  int32_t max_active_runs = 4;
  int32_t checkpoint_every = 5;
  absl::Duration service_wait = absl::Seconds(60);  // how long a run waits for its services to be SERVING
  bool resume = true;                               // resume unfinished runs found under runs_root at start-up
  // Where to export rlhf_orchestrator_runs{state} and rlhf_orchestrator_stage_progress_ratio{run_id,stage}; may be
  // null (no metrics).
  prometheus::Registry* registry = nullptr;
};

class RunManager {
 public:
  // A watcher receives events; returning false unsubscribes it. `done` runs once the run reached a terminal state
  // (or the manager shuts down).
  struct Watcher {
    std::function<bool(const v1::RunEvent&)> on_event;
    std::function<void()> on_done;
  };

  static absl::StatusOr<std::unique_ptr<RunManager>> Create(const RunManagerOptions& options);
  ~RunManager();  // cancels active runs and joins their threads

  // Validates and starts a run. For a run id it knows, with the same config (service addresses aside): returns the
  // run as it is when it is active or succeeded, and resumes it otherwise (failed, cancelled, or left unfinished by
  // a previous orchestrator), with the request's service addresses. AlreadyExists, naming the first field that
  // differs, for another config under a known run id. See OrchestratorService.StartRun.
  absl::StatusOr<v1::Run> StartRun(const v1::StartRunRequest& request);
  absl::StatusOr<v1::Run> GetRun(const std::string& run_id) const;
  std::vector<v1::Run> ListRuns(v1::RunState state) const;
  absl::StatusOr<v1::Run> CancelRun(const std::string& run_id, const std::string& reason);
  // Subscribes; with include_history the past events come first. NotFound for an unknown run.
  absl::Status Watch(const std::string& run_id, bool include_history, Watcher watcher);

  void Shutdown();

 private:
  struct Entry;
  class Metrics;
  explicit RunManager(const RunManagerOptions& options);
  void Launch(std::shared_ptr<Entry> entry);
  void Execute(std::shared_ptr<Entry> entry);
  void Publish(Entry& entry, const v1::RunEvent& event);
  absl::Status Persist(const Entry& entry) const;  // run.json, with entry.mu held
  void PersistOrLog(const Entry& entry) const;     // Persist, logging a failure
  // Waits (up to options_.service_wait) until every service of the run reports SERVING; the last error otherwise.
  absl::Status WaitForServices(const RunContext& context) const;
  void CountRuns();  // sets rlhf_orchestrator_runs from the runs' states; called without any entry's mu held

  RunManagerOptions options_;
  util::PathRoots runs_root_;   // where run folders may be
  util::PathRoots data_roots_;  // where the files a config names may be
  std::unique_ptr<Metrics> metrics_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> runs_;
  std::atomic<bool> shutting_down_{false};
};

}  // namespace rlhf::orchestrator

#endif  // RLHF_SERVICES_ORCHESTRATOR_RUN_MANAGER_H_
