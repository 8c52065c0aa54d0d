#include "tests/e2e/local_suite.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/runtime/client.h"
#include "common/runtime/status_util.h"
#include "common/util/file_util.h"
#include "nlohmann/json.hpp"
#include "services/orchestrator/run_config.h"
#include "services/orchestrator/run_setup.h"
#include "tests/testing/test_util.h"

extern char** environ;

namespace rlhf::e2e {
namespace {

using Json = nlohmann::json;

bool Terminal(v1::RunState s) {
  return s == v1::RUN_STATE_SUCCEEDED || s == v1::RUN_STATE_FAILED || s == v1::RUN_STATE_CANCELLED;
}

}  // namespace

v1::RunConfig ShortConfig(int32_t ppo_iterations, const std::string& model_type) {
  v1::RunConfig c;
  c.mutable_task()->set_builtin_task("instructions");
  if (!model_type.empty()) c.mutable_model()->mutable_config()->set_model_type(model_type);
  c.mutable_sft()->mutable_hparams()->set_epochs(1);
  c.mutable_sft()->mutable_hparams()->set_max_steps(30);
  c.mutable_comparisons()->set_num_prompts(64);
  c.mutable_reward_model()->mutable_hparams()->set_epochs(1);
  c.mutable_ppo()->set_iterations(ppo_iterations);
  c.mutable_ppo()->set_prompts_per_iteration(16);
  c.mutable_evaluation()->set_num_prompts(32);
  return orchestrator::WithDefaults(c);
}

absl::StatusOr<std::unique_ptr<LocalSuite>> LocalSuite::Start(const v1::RunConfig& config, const std::string& run_id,
                                                              const LocalSuiteOptions& options) {
  std::unique_ptr<LocalSuite> suite(new LocalSuite());
  suite->root_ = options.root.empty() ? testing::MakeTempDir("suite") : options.root;
  const std::string runs_root = options.runs_root.empty() ? suite->root_ + "/runs" : options.runs_root;
  suite->run_id_ = run_id;
  suite->run_dir_ = runs_root + "/" + run_id;
  auto files = orchestrator::PrepareRun(config, suite->run_dir_);
  if (!files.ok()) return files.status();
  cli::SuiteLayout layout;
  layout.policy_model = files->init_model;
  layout.reward_model = files->init_reward_model;
  layout.checkpoint_root = suite->root_ + "/trainer";
  layout.runs_root = runs_root;
  layout.labeling_state_dir = suite->root_ + "/labeling";
  suite->services_ = cli::SuiteServices(RLHF_BINARY_DIR, layout);
  suite->services_.back().args.push_back(absl::StrCat("--checkpoint_every=", options.checkpoint_every));
  for (int r = 2; r <= options.replicas; ++r) {
    for (const char* name : {"policy-generation", "reward-scoring"}) {
      cli::LocalService copy = *suite->Find(name);
      copy.name = absl::StrCat(name, "-", r);
      suite->services_.insert(suite->services_.end() - 1, copy);  // the orchestrator stays last
    }
  }
  if (absl::Status s = util::MakeDirectories(suite->root_ + "/logs"); !s.ok()) return s;
  if (absl::Status s = cli::StartLocalServices(suite->services_, suite->root_ + "/logs", absl::Seconds(60)); !s.ok()) {
    return s;
  }
  suite->config_ = config;
  v1::ServiceAddresses* a = suite->config_.mutable_services();
  a->set_generation(suite->Targets("policy-generation"));
  a->set_reward(suite->Targets("reward-scoring"));
  a->set_reference(suite->Address("reference-logprob"));
  a->set_trainer(suite->Address("ppo-trainer"));
  a->set_labeling(suite->Address("labeling"));
  suite->Connect();
  return suite;
}

LocalSuite::~LocalSuite() {
  if (!services_.empty()) cli::StopLocalServices(services_, absl::Seconds(40)).IgnoreError();
}

cli::LocalService* LocalSuite::Find(const std::string& name) {
  for (cli::LocalService& s : services_) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

std::string LocalSuite::Address(const std::string& name) {
  cli::LocalService* s = Find(name);
  return s == nullptr ? "" : absl::StrCat("127.0.0.1:", s->port);
}

std::string LocalSuite::Targets(const std::string& name) const {
  std::vector<std::string> addresses;
  for (const auto& s : services_) {
    if (s.name == name || absl::StartsWith(s.name, name + "-")) addresses.push_back(absl::StrCat("127.0.0.1:", s.port));
  }
  return addresses.size() == 1 ? addresses[0] : absl::StrCat("ipv4:", absl::StrJoin(addresses, ","));
}

void LocalSuite::Connect() {
  runtime::ClientOptions client;
  client.target = Address("orchestrator");
  client.max_reconnect_backoff = absl::Milliseconds(200);
  orchestrator_ = v1::OrchestratorService::NewStub(*runtime::MakeChannel(client));
}

absl::StatusOr<v1::Run> LocalSuite::StartRun() { return StartRun(config_); }

absl::StatusOr<v1::Run> LocalSuite::StartRun(const v1::RunConfig& config) {
  v1::StartRunRequest request;
  *request.mutable_config() = config;
  request.set_run_id(run_id_);
  v1::Run run;
  auto context = runtime::ContextWithTimeout(absl::Seconds(30));
  grpc::Status status = orchestrator_->StartRun(context.get(), request, &run);
  if (!status.ok()) return runtime::FromGrpcStatus(status);
  return run;
}

absl::StatusOr<v1::Run> LocalSuite::GetRun() {
  v1::GetRunRequest request;
  request.set_run_id(run_id_);
  v1::Run run;
  auto context = runtime::ContextWithTimeout(absl::Seconds(10));
  grpc::Status status = orchestrator_->GetRun(context.get(), request, &run);
  if (!status.ok()) return runtime::FromGrpcStatus(status);
  return run;
}

absl::StatusOr<v1::Run> LocalSuite::WaitForEnd(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status last = absl::OkStatus();
  while (absl::Now() < deadline) {
    auto run = GetRun();
    if (run.ok() && Terminal(run->state())) return run;
    if (!run.ok()) last = run.status();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return absl::DeadlineExceededError(absl::StrCat("the run did not end within ", absl::FormatDuration(timeout),
                                                  last.ok() ? "" : absl::StrCat(" (GetRun: ", last.ToString(), ")")));
}

absl::Status LocalSuite::Kill(const std::string& name) {
  cli::LocalService* s = Find(name);
  if (s == nullptr || s->pid <= 0) return absl::NotFoundError(absl::StrCat(name, " is not running"));
  if (::kill(s->pid, SIGKILL) != 0) return absl::InternalError(absl::StrCat("kill ", name, ": ", std::strerror(errno)));
  int status = 0;
  ::waitpid(s->pid, &status, 0);
  s->pid = -1;
  return absl::OkStatus();
}

absl::Status LocalSuite::Restart(const std::string& name) {
  cli::LocalService* s = Find(name);
  if (s == nullptr) return absl::NotFoundError(absl::StrCat("no service ", name));
  if (s->pid > 0) return absl::FailedPreconditionError(absl::StrCat(name, " is still running"));
  const std::string log_dir = absl::StrCat(root_, "/logs-restart-", ++restarts_);
  if (absl::Status st = util::MakeDirectories(log_dir); !st.ok()) return st;
  std::vector<cli::LocalService> one = {*s};
  if (absl::Status st = cli::StartLocalServices(one, log_dir, absl::Seconds(60)); !st.ok()) return st;
  *s = one[0];
  if (name == "orchestrator") Connect();
  return absl::OkStatus();
}

MetricLineCounts LocalSuite::MetricLines() const {
  auto lines = ReadMetricLines(run_dir_);
  return lines.ok() ? *lines : MetricLineCounts{};
}

absl::StatusOr<double> LocalSuite::MetricSum(const std::string& service, const std::string& metric,
                                             const std::string& label) {
  cli::LocalService* s = Find(service);
  if (s == nullptr) return absl::NotFoundError(absl::StrCat("no service ", service));
  auto text = testing::HttpGet(s->metrics_port, "/metrics");
  if (!text.ok()) return text.status();
  double sum = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    if (!absl::StartsWith(line, metric + "{") || !absl::StrContains(line, label)) continue;
    double value = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) sum += value;
  }
  return sum;
}

absl::StatusOr<MetricLineCounts> ReadMetricLines(const std::string& run_dir) {
  MetricLineCounts out;
  auto text = util::ReadFile(run_dir + "/metrics.jsonl");
  if (!text.ok()) return text.status();
  int number = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    ++number;
    Json j = Json::parse(line, nullptr, false);
    if (j.is_discarded()) return absl::DataLossError(absl::StrCat("metrics.jsonl:", number, " is not JSON: ", line));
    ++out[{j.value("stage", std::string()), j.value("round", 0), j.value("step", int64_t{0})}];
  }
  return out;
}

std::vector<std::string> TempFilesUnder(const std::string& dir) {
  std::vector<std::string> found;
  std::error_code error;
  for (std::filesystem::recursive_directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
    if (util::IsTempName(it->path().filename().string())) found.push_back(it->path().string());
  }
  return found;
}

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Spawn(const std::vector<std::string>& argv,
                                                                  const std::string& output_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, output_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return absl::InternalError(absl::StrCat("cannot start ", argv[0], ": ", std::strerror(rc)));
  return std::unique_ptr<ChildProcess>(new ChildProcess(pid, output_path));
}

ChildProcess::~ChildProcess() {
  if (reaped_) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
}

absl::StatusOr<int> ChildProcess::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    const pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      reaped_ = true;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (done < 0) return absl::InternalError(absl::StrCat("waitpid: ", std::strerror(errno)));
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("pid ", pid_, " still running after ",
                                                      absl::FormatDuration(timeout)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

std::string ChildProcess::Output() const {
  auto text = util::ReadFile(output_path_);
  return text.ok() ? *text : "";
}

absl::StatusOr<pid_t> FindChild(pid_t parent, const std::string& binary_name) {
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return absl::InternalError(absl::StrCat("opendir /proc: ", std::strerror(errno)));
  pid_t found = -1;
  while (dirent* e = ::readdir(proc)) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(e->d_name, &pid)) continue;
    auto stat = util::ReadFile(absl::StrCat("/proc/", pid, "/stat"));
    if (!stat.ok()) continue;
    // "pid (comm) state ppid ...": comm may hold spaces, so parse after the last ')'.
    const size_t close = stat->rfind(')');
    if (close == std::string::npos) continue;
    std::vector<absl::string_view> fields = absl::StrSplit(absl::string_view(*stat).substr(close + 2), ' ');
    pid_t ppid = 0;
    if (fields.size() < 2 || !absl::SimpleAtoi(fields[1], &ppid) || ppid != parent) continue;
    std::error_code error;
    const std::filesystem::path exe = std::filesystem::read_symlink(absl::StrCat("/proc/", pid, "/exe"), error);
    if (!error && exe.filename().string() == binary_name) {
      found = pid;
      break;
    }
  }
  ::closedir(proc);
  if (found < 0) return absl::NotFoundError(absl::StrCat("no child ", binary_name, " of pid ", parent));
  return found;
}

}  // namespace rlhf::e2e
