#include "tools/cli/run_command.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/runtime/client.h"
#include "common/runtime/status_util.h"
#include "common/task/evaluation.h"
#include "common/util/file_util.h"
#include "rlhf/v1/orchestrator.grpc.pb.h"
#include "services/orchestrator/run_config.h"
#include "services/orchestrator/run_setup.h"
#include "tools/cli/local_services.h"
#include "tools/report/report.h"

namespace rlhf::cli {
namespace {

namespace v1 = ::rlhf::v1;

std::string StageLabel(v1::Stage stage) {
  switch (stage) {
    case v1::STAGE_PRETRAIN: return "pretrain";
    case v1::STAGE_SFT: return "SFT";
    case v1::STAGE_COMPARISONS: return "comparisons";
    case v1::STAGE_REWARD_MODEL: return "reward model";
    case v1::STAGE_PPO: return "PPO";
    case v1::STAGE_EVALUATION: return "evaluation";
    default: return "setup";
  }
}

// The metrics shown beside each stage's bar.
std::string KeyMetrics(const v1::RunEvent& e) {
  static const char* const kKeys[] = {"train/loss", "val/loss", "val/accuracy", "comparisons/pairs", "ppo/mean_reward",
                                      "ppo/true_score", "ppo/kl", "eval/win_rate"};
  std::string out;
  for (const char* key : kKeys) {
    auto it = e.metrics().find(key);
    if (it != e.metrics().end()) absl::StrAppendFormat(&out, "  %s %.3f", key, it->second);
  }
  return out;
}

// One progress bar per stage: redrawn in place on a terminal, a line every 10% otherwise.
class ProgressPrinter {
 public:
  ProgressPrinter() : tty_(::isatty(STDOUT_FILENO) == 1) {}
  void Show(const v1::RunEvent& e) {
    const std::string label = e.round() > 0 ? absl::StrCat(StageLabel(e.stage()), " (round ", e.round(), ")")
                                            : StageLabel(e.stage());
    if (label != current_) {
      if (!current_.empty() && tty_) std::printf("\n");
      current_ = label;
      last_decile_ = -1;
      started_ = absl::Now();
    }
    if (!e.message().empty() && !e.has_state_change()) {
      if (tty_) std::printf("\r\033[K");
      std::printf("[%s] %s\n", label.c_str(), e.message().c_str());
    }
    if (e.total_steps() <= 0) return;
    const double fraction = std::min(1.0, static_cast<double>(e.step()) / static_cast<double>(e.total_steps()));
    const int width = 30, filled = static_cast<int>(fraction * width);
    const std::string bar = std::string(filled, '#') + std::string(width - filled, '.');
    const std::string line = absl::StrFormat("%-22s [%s] %5.1f%% %lld/%lld %5.0fs%s", label, bar, fraction * 100,
                                             static_cast<long long>(e.step()), static_cast<long long>(e.total_steps()),
                                             absl::ToDoubleSeconds(absl::Now() - started_), KeyMetrics(e));
    if (tty_) {
      std::printf("\r\033[K%s", line.c_str());
      std::fflush(stdout);
    } else if (static_cast<int>(fraction * 10) > last_decile_) {
      last_decile_ = static_cast<int>(fraction * 10);
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
  }
  void Finish() {
    if (tty_ && !current_.empty()) std::printf("\n");
  }

 private:
  bool tty_;
  std::string current_;
  int last_decile_ = -1;
  absl::Time started_ = absl::Now();
};

std::string Absolute(const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  char cwd[4096];
  if (::getcwd(cwd, sizeof(cwd)) == nullptr) return path;
  return absl::StrCat(cwd, "/", path);
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "rlhf run: %s\n", status.ToString().c_str());
  return 1;
}

// The config at `path` (protobuf text or JSON), or the built-in task's when `path` is empty; with defaults.
absl::StatusOr<v1::RunConfig> LoadRunConfig(const std::string& path) {
  v1::RunConfig config;
  if (!path.empty()) {
    auto read = orchestrator::ReadRunConfig(path);
    if (!read.ok()) return read.status();
    config = *read;
  } else {
    config.mutable_task()->set_builtin_task(orchestrator::kBuiltinTaskName);
  }
  return orchestrator::WithDefaults(config);
}

}  // namespace

absl::StatusOr<std::string> InitRunModels(const std::string& config_path, const std::string& out_dir) {
  if (out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  auto config = LoadRunConfig(config_path);
  if (!config.ok()) return config.status();
  if (!config->model().has_config()) {
    return absl::InvalidArgumentError(absl::StrCat(
        config_path, ": config.model.base_model_dir: the run starts from ", config->model().base_model_dir(),
        "; serve that model (and a reward model made from it) directly"));
  }
  if (absl::Status s = util::MakeDirectories(out_dir); !s.ok()) return s;
  const std::string scratch = out_dir + "/.init-run-models";
  std::error_code ignored;
  std::filesystem::remove_all(scratch, ignored);
  auto files = orchestrator::PrepareRun(*config, scratch);
  if (!files.ok()) return files.status();
  std::string summary;
  for (const auto& [name, from] : {std::pair<std::string, std::string>{"policy", files->init_model},
                                   {"reward", files->init_reward_model}}) {
    const std::string to = absl::StrCat(out_dir, "/", name);
    if (util::PathExists(to + "/model.safetensors")) {
      absl::StrAppend(&summary, "kept ", to, "\n");
      continue;
    }
    std::filesystem::remove_all(to, ignored);  // a folder without weights is not a model
    std::error_code error;
    std::filesystem::rename(from, to, error);
    if (error) return absl::InternalError(absl::StrCat("move ", from, " to ", to, ": ", error.message()));
    absl::StrAppend(&summary, "wrote ", to, "\n");
  }
  if (absl::Status s = util::SyncDirectory(out_dir); !s.ok()) return s;
  std::filesystem::remove_all(scratch, ignored);
  return summary;
}

int RunCommand(const RunCommandOptions& options) {
  const absl::Time start = absl::Now();
  std::string run_dir = Absolute(options.run_dir);
  while (run_dir.size() > 1 && run_dir.back() == '/') run_dir.pop_back();
  const std::string runs_root = util::DirName(run_dir);
  const std::string run_id = util::BaseName(run_dir);

  auto loaded = LoadRunConfig(options.config_path);
  if (!loaded.ok()) return Fail(loaded.status());
  v1::RunConfig config = *std::move(loaded);
  if (!config.run_dir().empty()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat(options.config_path, ": config.run_dir: leave it empty with rlhf run; use --run_dir")));
  }

  std::vector<LocalService> services;
  std::string orchestrator_address = options.orchestrator;
  const bool embedded = orchestrator_address.empty();
  std::vector<std::string> config_roots;
  if (embedded) {
    // The config's files are this machine's: relative to where `rlhf run` was started, and readable by the services
    // it starts (their folders join the runs folder in --path_roots).
    for (auto& [field, path] : orchestrator::ConfigPaths(&config)) {
      *path = Absolute(*path);
      const std::string root = field == "config.model.base_model_dir" ? *path : util::DirName(*path);
      if (std::find(config_roots.begin(), config_roots.end(), root) == config_roots.end()) {
        config_roots.push_back(root);
      }
    }
  }
  if (embedded) {
    // The services the config does not name run here, on loopback, serving the run's initial models.
    auto files = orchestrator::PrepareRun(config, run_dir);
    if (!files.ok()) return Fail(files.status());
    const std::string log_dir = run_dir + "/logs";
    if (absl::Status s = util::MakeDirectories(log_dir); !s.ok()) return Fail(s);
    SuiteLayout layout;
    layout.policy_model = files->init_model;
    layout.reward_model = files->init_reward_model;
    layout.checkpoint_root = run_dir + "/checkpoints/trainer-default";
    layout.runs_root = runs_root;
    layout.labeling_state_dir = run_dir + "/labeling";
    layout.resume_runs = false;  // StartRun below resumes the run, with these services' addresses
    layout.extra_roots = config_roots;
    services = SuiteServices(options.bin_dir, layout);
    std::printf("Starting %zu services on loopback (logs in %s)...\n", services.size(), log_dir.c_str());
    if (absl::Status s = StartLocalServices(services, log_dir, absl::Seconds(options.startup_timeout_seconds));
        !s.ok()) {
      return Fail(s);
    }
    std::map<std::string, std::string> address;
    for (const LocalService& s : services) address[s.name] = absl::StrCat("127.0.0.1:", s.port);
    v1::ServiceAddresses* a = config.mutable_services();
    if (a->generation().empty()) a->set_generation(address["policy-generation"]);
    if (a->reference().empty()) a->set_reference(address["reference-logprob"]);
    if (a->reward().empty()) a->set_reward(address["reward-scoring"]);
    if (a->trainer().empty()) a->set_trainer(address["ppo-trainer"]);
    if (a->labeling().empty()) a->set_labeling(address["labeling"]);
    orchestrator_address = address["orchestrator"];
    for (const LocalService& s : services) {
      std::printf("  %-18s 127.0.0.1:%-6d metrics http://127.0.0.1:%d/metrics\n", s.name.c_str(), s.port,
                  s.metrics_port);
    }
  }
  auto stop = [&]() -> absl::Status {
    if (services.empty()) return absl::OkStatus();
    return StopLocalServices(services, absl::Seconds(40));
  };

  runtime::ClientOptions client;
  client.target = orchestrator_address;
  if (!embedded) {
    client.bearer_token = options.bearer_token;
    client.tls_ca_file = options.tls_ca_file;
  }
  auto channel = runtime::MakeChannel(client);
  if (!channel.ok()) {
    stop().IgnoreError();
    return Fail(channel.status());
  }
  auto stub = v1::OrchestratorService::NewStub(*channel);
  v1::StartRunRequest request;
  *request.mutable_config() = config;
  // Locally the run is the directory; on a cluster it is the id asked for, or a new one.
  request.set_run_id(embedded ? run_id : options.run_id);
  v1::Run run;
  // Whether the cluster's orchestrator drives this run already (or finished it): StartRun then returns it as it is,
  // and this command follows it. (Ours, started above, resumes nothing by itself.)
  bool attached = false;
  if (!embedded && !request.run_id().empty()) {
    auto context = runtime::ContextWithTimeout(absl::Seconds(30));
    v1::GetRunRequest get;
    get.set_run_id(request.run_id());
    v1::Run known;
    attached = stub->GetRun(context.get(), get, &known).ok() &&
               (known.state() == v1::RUN_STATE_RUNNING || known.state() == v1::RUN_STATE_SUCCEEDED);
  }
  {
    auto context = runtime::ContextWithTimeout(absl::Seconds(60));
    grpc::Status status = stub->StartRun(context.get(), request, &run);
    if (!status.ok()) {
      absl::Status s = runtime::FromGrpcStatus(status);
      stop().IgnoreError();
      return Fail(s);
    }
  }
  std::printf("\n%s %s in %s\n", attached ? "Following run" : "Run", run.run_id().c_str(), run.run_dir().c_str());
  ProgressPrinter printer;
  {
    grpc::ClientContext context;
    v1::WatchRunRequest watch;
    watch.set_run_id(run.run_id());
    auto reader = stub->WatchRun(&context, watch);
    v1::RunEvent event;
    while (reader->Read(&event)) printer.Show(event);
    printer.Finish();
    grpc::Status status = reader->Finish();
    if (!status.ok()) std::fprintf(stderr, "rlhf run: watching the run: %s\n", status.error_message().c_str());
  }
  grpc::Status got;
  {
    auto context = runtime::ContextWithTimeout(absl::Seconds(30));
    v1::GetRunRequest get;
    get.set_run_id(run.run_id());
    got = stub->GetRun(context.get(), get, &run);
  }
  const absl::Status stopped = stop();
  if (!got.ok() || run.state() != v1::RUN_STATE_SUCCEEDED) {
    const std::string config_arg = options.config_path.empty() ? "" : absl::StrCat(options.config_path, " ");
    const std::string again =
        embedded ? absl::StrCat(config_arg, "--run_dir=", options.run_dir)
                 : absl::StrCat(config_arg, "--orchestrator=", options.orchestrator, " --run_id=", run.run_id());
    const std::string how =
        got.ok() ? absl::StrCat("the run ended ", v1::RunState_Name(run.state()), ": ", run.error_message())
                 : absl::StrCat("the orchestrator at ", orchestrator_address, " stopped answering (",
                                runtime::FromGrpcStatus(got).ToString(), "); the run is not finished");
    std::fprintf(stderr, "\nrlhf run: %s\n(run `rlhf run %s` again to resume it)\n", how.c_str(), again.c_str());
    return 1;
  }
  std::printf("\nResults on %d held-out prompts (one sampled response per policy and prompt):\n\n",
              run.evaluation().num_prompts());
  auto summary = task::ReadEvalSummary(run.run_dir() + "/eval/summary.json");
  if (summary.ok()) std::printf("%s", report::FormatSummaryTable(*summary).c_str());
  std::printf("\nReport: %s/report.html\nWall-clock time: %.0f s\n", run.run_dir().c_str(),
              absl::ToDoubleSeconds(absl::Now() - start));
  if (!stopped.ok()) std::fprintf(stderr, "rlhf run: stopping the services: %s\n", stopped.ToString().c_str());
  return 0;
}

}  // namespace rlhf::cli
