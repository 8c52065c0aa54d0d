#include "services/orchestrator/run_manager.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/runtime/logging.h"
#include "common/runtime/status_util.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/util/time_util.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/orchestrator/run_config.h"
#include "services/orchestrator/run_setup.h"
#include "services/orchestrator/run_driver.h"

namespace rlhf::orchestrator {
namespace {

using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp Now() { return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now())); }

bool Terminal(v1::RunState s) {
  return s == v1::RUN_STATE_SUCCEEDED || s == v1::RUN_STATE_FAILED || s == v1::RUN_STATE_CANCELLED;
}

std::string NewRunId() {
  std::random_device rd;
  return absl::StrCat("run-", absl::FormatTime("%Y%m%d-%H%M%S", absl::Now(), absl::UTCTimeZone()), "-",
                      absl::StrFormat("%04x", rd() & 0xffff));
}

bool ValidRunId(const std::string& id) {
  if (id.empty() || id.size() > 128 || id[0] == '.') return false;
  return std::all_of(id.begin(), id.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'; });
}

}  // namespace

// rlhf_orchestrator_runs{state}: the runs this orchestrator knows, by state. rlhf_orchestrator_stage_progress_ratio
// {run_id, stage}: step / total steps of the stage each running run is in; its series goes when the stage or the run
// ends, so the label set stays as small as the active runs.
class RunManager::Metrics {
 public:
  explicit Metrics(prometheus::Registry& registry)
      : runs_(prometheus::BuildGauge()
                  .Name("rlhf_orchestrator_runs")
                  .Help("Runs the orchestrator knows, by state (pending, running, succeeded, failed, cancelled)")
                  .Register(registry)),
        progress_(prometheus::BuildGauge()
                      .Name("rlhf_orchestrator_stage_progress_ratio")
                      .Help("Progress of each running run through its current stage, 0 to 1")
                      .Register(registry)) {
    for (v1::RunState state : {v1::RUN_STATE_PENDING, v1::RUN_STATE_RUNNING, v1::RUN_STATE_SUCCEEDED,
                               v1::RUN_STATE_FAILED, v1::RUN_STATE_CANCELLED}) {
      by_state_[state] = &runs_.Add({{"state", StateLabel(state)}});
    }
  }

  void SetCounts(const std::map<v1::RunState, int>& counts) {
    for (auto& [state, gauge] : by_state_) {
      auto it = counts.find(state);
      gauge->Set(it == counts.end() ? 0 : it->second);
    }
  }

  void SetProgress(const std::string& run_id, v1::Stage stage, int64_t step, int64_t total) {
    if (total <= 0) return;
    std::lock_guard<std::mutex> lock(mu_);
    Progress& p = progress_by_run_[run_id];
    if (p.gauge != nullptr && p.stage != stage) {
      progress_.Remove(p.gauge);
      p.gauge = nullptr;
    }
    if (p.gauge == nullptr) {
      p.stage = stage;
      p.gauge = &progress_.Add({{"run_id", run_id}, {"stage", StageName(stage)}});
    }
    p.gauge->Set(std::min(1.0, static_cast<double>(step) / static_cast<double>(total)));
  }

  void EndProgress(const std::string& run_id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = progress_by_run_.find(run_id);
    if (it == progress_by_run_.end()) return;
    if (it->second.gauge != nullptr) progress_.Remove(it->second.gauge);
    progress_by_run_.erase(it);
  }

 private:
  struct Progress {
    v1::Stage stage = v1::STAGE_UNSPECIFIED;
    prometheus::Gauge* gauge = nullptr;
  };

  static std::string StateLabel(v1::RunState state) {
    std::string name = absl::AsciiStrToLower(v1::RunState_Name(state));
    return name.substr(std::string("run_state_").size());
  }

  prometheus::Family<prometheus::Gauge>& runs_;
  prometheus::Family<prometheus::Gauge>& progress_;
  std::map<v1::RunState, prometheus::Gauge*> by_state_;
  std::mutex mu_;
  std::map<std::string, Progress> progress_by_run_;
};

struct RunManager::Entry {
  std::mutex mu;
  v1::Run run;
  std::vector<v1::RunEvent> history;
  std::vector<Watcher> watchers;
  std::atomic<bool> cancel{false};
  std::thread thread;
  absl::Time last_persist = absl::InfinitePast();
};

RunManager::RunManager(const RunManagerOptions& options) : options_(options) {
  if (options_.registry != nullptr) metrics_ = std::make_unique<Metrics>(*options_.registry);
}

void RunManager::CountRuns() {
  if (!metrics_) return;
  std::map<v1::RunState, int> counts;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, e] : runs_) {
      std::lock_guard<std::mutex> entry_lock(e->mu);
      ++counts[e->run.state()];
    }
  }
  metrics_->SetCounts(counts);
}

absl::StatusOr<std::unique_ptr<RunManager>> RunManager::Create(const RunManagerOptions& options) {
  RETURN_IF_ERROR(util::MakeDirectories(options.runs_root));
  std::unique_ptr<RunManager> manager(new RunManager(options));
  ASSIGN_OR_RETURN(manager->runs_root_, util::PathRoots::Create({options.runs_root}, "--runs_root"));
  ASSIGN_OR_RETURN(manager->data_roots_,
                   util::PathRoots::Create(options.path_roots.empty() ? std::vector<std::string>{options.runs_root}
                                                                      : options.path_roots,
                                           "--path_roots"));
  // Known runs: every runs_root/<id>/run.json.
  DIR* dir = ::opendir(options.runs_root.c_str());
  if (dir == nullptr) return util::ErrnoStatus("open runs root", options.runs_root, errno);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] != '.') names.push_back(e->d_name);
  }
  ::closedir(dir);
  for (const std::string& name : names) {
    const std::string path = absl::StrCat(options.runs_root, "/", name, "/run.json");
    auto text = util::ReadFile(path);
    if (!text.ok()) continue;
    v1::Run run;
    if (!google::protobuf::util::JsonStringToMessage(*text, &run).ok()) continue;
    auto entry = std::make_shared<Entry>();
    entry->run = run;
    manager->runs_[run.run_id()] = entry;
    if (options.resume && !Terminal(run.state())) {
      runtime::Logger("orchestrator")->info("resuming run_id={} stage={} step={}", run.run_id(),
                                            v1::Stage_Name(run.stage()), run.step());
      manager->Launch(entry);
    }
  }
  manager->CountRuns();
  return manager;
}

RunManager::~RunManager() { Shutdown(); }

void RunManager::Shutdown() {
  shutting_down_ = true;
  std::vector<std::shared_ptr<Entry>> entries;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, e] : runs_) entries.push_back(e);
  }
  for (auto& e : entries) e->cancel = true;
  for (auto& e : entries) {
    if (e->thread.joinable()) e->thread.join();
  }
}

absl::Status RunManager::Persist(const Entry& entry) const {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  if (!google::protobuf::util::MessageToJsonString(entry.run, &json, options).ok()) {
    return absl::InternalError("cannot print run.json");
  }
  return util::WriteFileAtomically(entry.run.run_dir() + "/run.json", json);
}

absl::StatusOr<v1::Run> RunManager::StartRun(const v1::StartRunRequest& request) {
  if (shutting_down_) return absl::UnavailableError("the orchestrator is shutting down");
  const std::string run_id = request.run_id().empty() ? NewRunId() : request.run_id();
  if (!ValidRunId(run_id)) {
    return absl::InvalidArgumentError("run_id: use 1-128 letters, digits, '-', '_' or '.', not starting with '.'");
  }
  v1::RunConfig config = WithDefaults(request.config());
  RETURN_IF_ERROR(ValidateRunConfig(config));
  // Every file the config names resolves inside --path_roots, and the run's folder inside --runs_root; the run keeps
  // the resolved paths, which are what the services are sent.
  for (auto& [field, path] : ConfigPaths(&config)) {
    ASSIGN_OR_RETURN(*path, data_roots_.Resolve(*path, field));
  }
  if (!config.run_dir().empty()) {
    ASSIGN_OR_RETURN(*config.mutable_run_dir(), runs_root_.ResolveForWrite(config.run_dir(), "config.run_dir"));
  }
  std::shared_ptr<Entry> existing;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = runs_.find(run_id);
    if (it != runs_.end()) existing = it->second;
  }
  if (existing) {
    // The same run asked for again (a client that lost track of it, `rlhf run` run again): the same config is the
    // same run, to follow or to resume; another config under its id is refused.
    std::lock_guard<std::mutex> lock(existing->mu);
    const std::string difference = RunConfigDifference(existing->run.config(), config);
    if (!difference.empty()) {
      return absl::AlreadyExistsError(absl::StrCat(
          "run_id '", run_id, "' is taken by a run with another config (", difference,
          "); use that run's config to resume or follow it, or choose another run_id"));
    }
    const bool active = existing->thread.joinable() && !Terminal(existing->run.state());
    if (active && !google::protobuf::util::MessageDifferencer::Equals(existing->run.config().services(),
                                                                      config.services())) {
      return absl::AlreadyExistsError(absl::StrCat("run ", run_id,
                                                   " is running against other service addresses; follow it with "
                                                   "WatchRun, or cancel it and start it again to move it"));
    }
    if (active || existing->run.state() == v1::RUN_STATE_SUCCEEDED) return existing->run;
  }
  const std::string run_dir =
      config.run_dir().empty() ? absl::StrCat(runs_root_.roots().front(), "/", run_id) : config.run_dir();
  // A new run never takes over a folder that holds other files (writing run.json there could clobber them), only an
  // empty one or one PrepareRun prepared for it (`rlhf run` writes the task data and initial models first).
  if (!existing && !IsNewRunFolder(run_dir)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "config.run_dir: ", run_dir,
        " already holds files and no run of this id; name a new or empty folder (or resume the run it holds under "
        "its own run_id)"));
  }
  if (request.validate_only()) {
    v1::Run run;
    run.set_run_id(run_id);
    *run.mutable_config() = config;
    run.set_state(v1::RUN_STATE_PENDING);
    return run;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    int active = 0;
    for (const auto& [id, e] : runs_) {
      std::lock_guard<std::mutex> entry_lock(e->mu);
      active += !Terminal(e->run.state()) && e->thread.joinable();
    }
    if (active >= options_.max_active_runs) {
      return absl::ResourceExhaustedError(absl::StrCat(active, " runs are active, the limit is ",
                                                       options_.max_active_runs));
    }
  }
  std::shared_ptr<Entry> entry = existing;
  if (entry) {
    // Resume (after a failure, a cancel, or when a previous orchestrator left it unfinished and this one was told
    // not to resume runs by itself), with the request's service addresses.
    if (entry->thread.joinable()) entry->thread.join();
    std::lock_guard<std::mutex> lock(entry->mu);
    *entry->run.mutable_config() = config;
    entry->run.set_error_message("");
    entry->cancel = false;
  } else {
    entry = std::make_shared<Entry>();
    entry->run.set_run_id(run_id);
    *entry->run.mutable_config() = config;
    entry->run.set_run_dir(run_dir);
    entry->run.set_state(v1::RUN_STATE_PENDING);
    *entry->run.mutable_create_time() = Now();
    RETURN_IF_ERROR(util::MakeDirectories(entry->run.run_dir()));
    std::lock_guard<std::mutex> lock(mu_);
    runs_[run_id] = entry;
  }
  {
    std::lock_guard<std::mutex> lock(entry->mu);
    RETURN_IF_ERROR(Persist(*entry));
  }
  Launch(entry);
  CountRuns();
  std::lock_guard<std::mutex> lock(entry->mu);
  return entry->run;
}

void RunManager::Launch(std::shared_ptr<Entry> entry) {
  std::lock_guard<std::mutex> lock(entry->mu);
  entry->run.set_state(v1::RUN_STATE_RUNNING);
  entry->thread = std::thread([this, entry] { Execute(entry); });
}

void RunManager::Publish(Entry& entry, const v1::RunEvent& event) {
  std::vector<Watcher> watchers;
  {
    std::lock_guard<std::mutex> lock(entry.mu);
    entry.history.push_back(event);
    if (entry.history.size() > 20000) entry.history.erase(entry.history.begin(), entry.history.begin() + 10000);
    watchers = entry.watchers;
  }
  std::vector<bool> keep;
  for (Watcher& w : watchers) keep.push_back(w.on_event(event));
  std::lock_guard<std::mutex> lock(entry.mu);
  // Drop the ones that unsubscribed (watchers only ever get appended while we published).
  std::vector<Watcher> kept;
  for (size_t i = 0; i < entry.watchers.size(); ++i) {
    if (i >= keep.size() || keep[i]) kept.push_back(entry.watchers[i]);
  }
  entry.watchers = std::move(kept);
}

void RunManager::Execute(std::shared_ptr<Entry> entry) {
  auto log = runtime::Logger("orchestrator");
  RunContext context;
  {
    std::lock_guard<std::mutex> lock(entry->mu);
    context.run_id = entry->run.run_id();
    context.run_dir = entry->run.run_dir();
    context.config = entry->run.config();
    PersistOrLog(*entry);
  }
  context.client = options_.client;
  context.checkpoint_every = options_.checkpoint_every;
  context.cancelled = [this, entry] { return entry->cancel.load() || shutting_down_.load(); };
  v1::Run working;
  {
    std::lock_guard<std::mutex> lock(entry->mu);
    working = entry->run;
  }
  // DriveRun updates a copy; events mirror it into the entry.
  context.emit = [this, entry, &working](const v1::RunEvent& event) {
    if (metrics_) metrics_->SetProgress(event.run_id(), event.stage(), event.step(), event.total_steps());
    Publish(*entry, event);
    std::lock_guard<std::mutex> lock(entry->mu);
    const v1::RunState state = entry->run.state();
    entry->run = working;
    entry->run.set_state(state);
    if (absl::Now() - entry->last_persist > absl::Seconds(2) || event.has_checkpoint() || !event.message().empty()) {
      PersistOrLog(*entry);
      entry->last_persist = absl::Now();
    }
  };
  // Attempts: a service that restarts or is busy (ResumableError) costs the stage in progress, not the run. The run
  // resumes from its last completed step once its services answer again, as a new orchestrator would. It gives up
  // when the services stay down for service_wait, or when kMinAttemptsBeforeGivingUp attempts in a row and
  // service_wait went by without a completed step (a trainer busy with a killed orchestrator's long call is waited
  // for that long).
  constexpr int kMinAttemptsBeforeGivingUp = 6;
  absl::Status status;
  std::string progress_before;  // progress.json when the last attempt began
  int attempts_without_progress = 0;
  absl::Time last_progress = absl::Now();
  for (int attempt = 1;; ++attempt) {
    status = WaitForServices(context);
    if (status.ok()) {
      progress_before = util::ReadFile(context.run_dir + "/progress.json").value_or("");
      status = DriveRun(context, &working);
    }
    if (status.ok() || context.cancelled() || !ResumableError(status)) break;
    const std::string progress_after = util::ReadFile(context.run_dir + "/progress.json").value_or("");
    if (progress_after != progress_before) {
      attempts_without_progress = 0;
      last_progress = absl::Now();
    } else {
      ++attempts_without_progress;
    }
    if (attempts_without_progress >= kMinAttemptsBeforeGivingUp &&
        absl::Now() - last_progress >= options_.service_wait) {
      status = absl::Status(status.code(), absl::StrCat(status.message(), " (", attempts_without_progress,
                                                        " attempts in a row over ",
                                                        absl::FormatDuration(absl::Now() - last_progress),
                                                        " completed no step; giving up)"));
      break;
    }
    const absl::Duration backoff =
        std::min(absl::Seconds(8), absl::Milliseconds(250) * (1 << std::min(attempts_without_progress, 5)));
    log->warn("run_id={} attempt={} stopped: {}; resuming from the last completed step in {}", context.run_id,
              attempt, status.ToString(), absl::FormatDuration(backoff));
    v1::RunEvent note;
    note.set_run_id(context.run_id);
    *note.mutable_time() = Now();
    note.set_stage(working.stage());
    note.set_round(working.round());
    note.set_step(working.step());
    note.set_total_steps(working.total_steps());
    note.set_message(absl::StrCat(status.message(), "; resuming from the last completed step"));
    context.emit(note);
    for (const absl::Time until = absl::Now() + backoff; absl::Now() < until && !context.cancelled();) {
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
  v1::RunEvent final_event;
  {
    std::lock_guard<std::mutex> lock(entry->mu);
    const v1::RunState previous = entry->run.state();
    entry->run = working;
    if (status.ok()) {
      entry->run.set_state(v1::RUN_STATE_SUCCEEDED);
    } else if (absl::IsCancelled(status) && entry->cancel) {
      entry->run.set_state(v1::RUN_STATE_CANCELLED);
    } else if (shutting_down_) {
      entry->run.set_state(v1::RUN_STATE_RUNNING);  // resumed by the next orchestrator
    } else {
      entry->run.set_state(v1::RUN_STATE_FAILED);
    }
    std::string message = runtime::Utf8Safe(status.message());  // may quote a service's error
    if (absl::IsResourceExhausted(status)) {
      // A full disk (or quota): everything completed is kept; the run goes on from there once there is room.
      absl::StrAppend(&message, " (free space, then start the run again with the same run_id and config to resume it)");
    }
    if (!status.ok()) entry->run.set_error_message(message);
    if (Terminal(entry->run.state())) *entry->run.mutable_end_time() = Now();
    *entry->run.mutable_update_time() = Now();
    PersistOrLog(*entry);
    final_event.set_run_id(entry->run.run_id());
    *final_event.mutable_time() = Now();
    final_event.set_stage(entry->run.stage());
    final_event.set_round(entry->run.round());
    final_event.set_step(entry->run.step());
    final_event.set_total_steps(entry->run.total_steps());
    final_event.set_message(status.ok() ? "run succeeded" : message);
    final_event.mutable_state_change()->set_previous(previous);
    final_event.mutable_state_change()->set_current(entry->run.state());
  }
  if (status.ok()) {
    log->info("run finished run_id={}", context.run_id);
  } else {
    log->error("run stopped run_id={} error={}", context.run_id, status.ToString());
  }
  if (metrics_) metrics_->EndProgress(context.run_id);
  CountRuns();
  Publish(*entry, final_event);
  std::vector<Watcher> watchers;
  {
    std::lock_guard<std::mutex> lock(entry->mu);
    watchers.swap(entry->watchers);
  }
  for (Watcher& w : watchers) {
    if (w.on_done) w.on_done();
  }
}

absl::Status RunManager::WaitForServices(const RunContext& context) const {
  absl::Status status;
  const absl::Time give_up = absl::Now() + options_.service_wait;
  while (true) {
    status = CheckServices(context);
    if (status.ok() || absl::Now() > give_up || context.cancelled()) return status;
    absl::SleepFor(absl::Milliseconds(250));
  }
}

void RunManager::PersistOrLog(const Entry& entry) const {
  // run.json mirrors the run for GetRun after a restart; progress.json is what a resume trusts, so a run.json that
  // cannot be written (a full disk) is reported, not fatal.
  if (absl::Status s = Persist(entry); !s.ok()) {
    runtime::Logger("orchestrator")->error("run.json not written run_id={}: {}", entry.run.run_id(), s.ToString());
  }
}

absl::StatusOr<v1::Run> RunManager::GetRun(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = runs_.find(run_id);
  if (it == runs_.end()) return absl::NotFoundError(absl::StrCat("no run ", run_id));
  std::lock_guard<std::mutex> entry_lock(it->second->mu);
  return it->second->run;
}

std::vector<v1::Run> RunManager::ListRuns(v1::RunState state) const {
  std::vector<v1::Run> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, e] : runs_) {
    std::lock_guard<std::mutex> entry_lock(e->mu);
    if (state == v1::RUN_STATE_UNSPECIFIED || e->run.state() == state) out.push_back(e->run);
  }
  std::sort(out.begin(), out.end(), [](const v1::Run& a, const v1::Run& b) {
    return TimeUtil::TimestampToNanoseconds(a.create_time()) > TimeUtil::TimestampToNanoseconds(b.create_time());
  });
  return out;
}

absl::StatusOr<v1::Run> RunManager::CancelRun(const std::string& run_id, const std::string& reason) {
  std::shared_ptr<Entry> entry;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = runs_.find(run_id);
    if (it == runs_.end()) return absl::NotFoundError(absl::StrCat("no run ", run_id));
    entry = it->second;
  }
  entry->cancel = true;
  runtime::Logger("orchestrator")->info("cancelling run_id={} reason={}", run_id, reason);
  std::lock_guard<std::mutex> lock(entry->mu);
  return entry->run;
}

absl::Status RunManager::Watch(const std::string& run_id, bool include_history, Watcher watcher) {
  std::shared_ptr<Entry> entry;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = runs_.find(run_id);
    if (it == runs_.end()) return absl::NotFoundError(absl::StrCat("no run ", run_id));
    entry = it->second;
  }
  std::unique_lock<std::mutex> lock(entry->mu);
  if (include_history) {
    for (const v1::RunEvent& e : entry->history) {
      if (!watcher.on_event(e)) return absl::OkStatus();
    }
  }
  if (Terminal(entry->run.state()) || !entry->thread.joinable()) {
    v1::RunEvent event;
    event.set_run_id(run_id);
    *event.mutable_time() = Now();
    event.set_stage(entry->run.stage());
    event.set_step(entry->run.step());
    event.mutable_state_change()->set_previous(entry->run.state());
    event.mutable_state_change()->set_current(entry->run.state());
    event.set_message(entry->run.error_message());
    lock.unlock();
    watcher.on_event(event);
    if (watcher.on_done) watcher.on_done();
    return absl::OkStatus();
  }
  entry->watchers.push_back(std::move(watcher));
  return absl::OkStatus();
}

}  // namespace rlhf::orchestrator
