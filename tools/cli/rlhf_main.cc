// rlhf: the suite's command-line tool (`rlhf --help` lists the commands and flags).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/runtime/auth.h"
#include "common/runtime/client.h"
#include "common/runtime/logging.h"
#include "common/runtime/server.h"
#include "common/runtime/server_main.h"
#include "common/runtime/status_util.h"
#include "common/util/status_macros.h"
#include "rlhf/v1/generation.grpc.pb.h"
#include "rlhf/v1/reference.grpc.pb.h"
#include "tools/cli/label_command.h"
#include "tools/cli/local_services.h"
#include "tools/cli/model_commands.h"
#include "tools/cli/run_command.h"

ABSL_FLAG(std::string, bin_dir, "",
          "run: build folder holding services/<name>/rlhf-<name>; empty means the build this rlhf binary is in");
ABSL_FLAG(std::string, run_dir, "runs/local",
          "run: folder of the run (its name is the run id); running again on it resumes an unfinished run");
ABSL_FLAG(std::string, run_id, "",
          "run --orchestrator: id of the run to start, or of an unfinished one to resume; empty: a new id");
ABSL_FLAG(std::string, config, "",
          "run, init-run-models: run config file (protobuf JSON or text); empty: the built-in task");
ABSL_DECLARE_FLAG(std::string, out);  // tools/cli/model_commands.cc
ABSL_FLAG(std::string, orchestrator, "",
          "run: address of a running orchestrator whose config names the services; empty: start the suite here");
ABSL_FLAG(absl::Duration, startup_timeout, absl::Seconds(60), "run: how long services may take to report SERVING");
ABSL_FLAG(std::string, target, "127.0.0.1:50051", "health: host:port of the server to probe");
ABSL_FLAG(std::string, service, "", "health: service name to ask about; empty asks about the whole server");
ABSL_FLAG(std::string, tls_ca_file, "", "health, label, run --orchestrator: PEM CA bundle; set to reach a TLS server");
ABSL_FLAG(std::string, labeling, "127.0.0.1:50055", "label: host:port of the labeling service");
ABSL_FLAG(std::string, labeler_id, "",
          "label: who is labeling (default: with --token_file, the identity the server gives that token; "
          "without, $USER)");
ABSL_FLAG(std::string, token_file, "",
          "label, run --orchestrator: file whose first line is the bearer token the services expect");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(3), "health: deadline of the probe");

namespace rlhf::cli {
namespace {

constexpr char kUsage[] =
    "rlhf: command-line tool of the RLHF suite.\n\n"
    "Usage:\n"
    "  rlhf run [CONFIG] [--run_dir=DIR]   the whole SFT -> reward model -> PPO loop (default: the built-in task),\n"
    "                                      services started on loopback; again on the same DIR resumes the run\n"
    "  rlhf run CONFIG --orchestrator=HOST:PORT [--run_id=ID --token_file=FILE --tls_ca_file=PEM]\n"
    "                                      the same on a cluster, whose services CONFIG names\n"
    "  rlhf health --target=HOST:PORT [--service=NAME]\n"
    "                                      exit 0 when the server (or service) reports SERVING, 1 otherwise\n"
    "  rlhf label [--labeling=HOST:PORT] [--labeler_id=NAME]\n"
    "                                      rank the labeling queue's tasks from this terminal\n"
    "  rlhf init-run-models --out=DIR [CONFIG]\n"
    "                                      write DIR/policy and DIR/reward, the initial models a run of CONFIG\n"
    "                                      (default: the built-in task) starts from, for services started by hand\n"
    "  rlhf init-model --out=DIR [--model_type=gpt2|llama|qwen2|qwen3|mistral --n_layer --n_embd --n_head\n"
    "      --num_key_value_heads --head_dim --intermediate_size --n_positions --tokenizer=byte|gpt2 --seed]\n"
    "                                      write a randomly initialised GPT-2 with its tokenizer\n"
    "  rlhf info --model=DIR               describe a model folder\n"
    "  rlhf tokenize --model=DIR --text=T  show the token ids of a text\n"
    "  rlhf generate --model=DIR --prompt=T [--num_samples --max_new_tokens --temperature --top_k --top_p --seed]\n"
    "                                      sample responses (KV-cached)\n"
    "  rlhf score --model=DIR --prompt=T --response=T\n"
    "                                      log-likelihood of a response (and its reward, for a reward model)\n";

std::string DefaultBinDir() {
  char path[4096];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return "build";
  std::string exe(path, static_cast<size_t>(n));
  const std::string suffix = "/tools/cli/rlhf";
  if (absl::EndsWith(exe, suffix)) return exe.substr(0, exe.size() - suffix.size());
  return exe.substr(0, exe.find_last_of('/'));
}

int RunHealth() {
  runtime::ClientOptions client;
  client.target = absl::GetFlag(FLAGS_target);
  client.tls_ca_file = absl::GetFlag(FLAGS_tls_ca_file);
  auto channel = runtime::MakeChannel(client);
  if (!channel.ok()) {
    std::fprintf(stderr, "rlhf health: %s\n", std::string(channel.status().message()).c_str());
    return 2;
  }
  const std::string service = absl::GetFlag(FLAGS_service);
  auto health = runtime::CheckHealth(**channel, service, absl::GetFlag(FLAGS_timeout));
  const std::string what = service.empty() ? client.target : absl::StrCat(client.target, " ", service);
  std::printf("%s: %s\n", what.c_str(), runtime::DescribeHealth(health).c_str());
  return health.ok() && *health == runtime::HealthState::kServing ? 0 : 1;
}

// The bearer token in --token_file's first line; empty without the flag.
absl::StatusOr<std::string> TokenFromFlag() {
  const std::string path = absl::GetFlag(FLAGS_token_file);
  if (path.empty()) return std::string();
  return runtime::ReadBearerTokenFile("--token_file", path);
}

int RunLabel() {
  LabelSessionOptions options;
  options.client.target = absl::GetFlag(FLAGS_labeling);
  options.client.tls_ca_file = absl::GetFlag(FLAGS_tls_ca_file);
  auto token = TokenFromFlag();
  if (!token.ok()) {
    std::fprintf(stderr, "rlhf label: %s\n", std::string(token.status().message()).c_str());
    return 2;
  }
  options.client.bearer_token = *token;
  options.labeler_id = absl::GetFlag(FLAGS_labeler_id);
  if (options.labeler_id.empty() && options.client.bearer_token.empty() && std::getenv("USER") != nullptr) {
    options.labeler_id = std::getenv("USER");
  }
  auto submitted = RunLabelSession(options, std::cin, std::cout);
  if (!submitted.ok()) {
    std::fprintf(stderr, "rlhf label: %s\n", std::string(submitted.status().message()).c_str());
    return 1;
  }
  std::printf("\n%lld rankings submitted\n", static_cast<long long>(*submitted));
  return 0;
}

int RunInitRunModels(const std::vector<char*>& args) {
  auto done = InitRunModels(args.size() > 2 ? args[2] : absl::GetFlag(FLAGS_config), absl::GetFlag(FLAGS_out));
  if (!done.ok()) {
    std::fprintf(stderr, "rlhf init-run-models: %s\n", done.status().ToString().c_str());
    return 1;
  }
  std::printf("%s", done->c_str());
  return 0;
}

int RunMainJob(const std::vector<char*>& args) {
  RunCommandOptions options;
  options.bin_dir = absl::GetFlag(FLAGS_bin_dir).empty() ? DefaultBinDir() : absl::GetFlag(FLAGS_bin_dir);
  options.run_dir = absl::GetFlag(FLAGS_run_dir);
  options.config_path = args.size() > 2 ? args[2] : absl::GetFlag(FLAGS_config);
  options.orchestrator = absl::GetFlag(FLAGS_orchestrator);
  options.run_id = absl::GetFlag(FLAGS_run_id);
  options.tls_ca_file = absl::GetFlag(FLAGS_tls_ca_file);
  auto token = TokenFromFlag();
  if (!token.ok()) {
    std::fprintf(stderr, "rlhf run: %s\n", std::string(token.status().message()).c_str());
    return 2;
  }
  options.bearer_token = *token;
  options.startup_timeout_seconds = absl::ToDoubleSeconds(absl::GetFlag(FLAGS_startup_timeout));
  return RunCommand(options);
}

}  // namespace
}  // namespace rlhf::cli

int main(int argc, char** argv) {
  rlhf::runtime::SetUpFlagUsage(rlhf::cli::kUsage);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    std::fprintf(stderr, "%s\nSee rlhf --help for the flags.\n", rlhf::cli::kUsage);
    return 2;
  }
  const std::string command = args[1];
  const size_t max_args = command == "run" || command == "init-run-models" ? 3 : 2;
  if (args.size() > max_args) {
    std::fprintf(stderr, "rlhf %s: unexpected argument '%s'\n", command.c_str(), args[max_args]);
    return 2;
  }
  if (command == "health") return rlhf::cli::RunHealth();
  if (command == "run") return rlhf::cli::RunMainJob(args);
  if (command == "label") return rlhf::cli::RunLabel();
  if (command == "init-model") return rlhf::cli::RunInitModel();
  if (command == "init-run-models") return rlhf::cli::RunInitRunModels(args);
  if (command == "info") return rlhf::cli::RunInfo();
  if (command == "tokenize") return rlhf::cli::RunTokenize();
  if (command == "generate") return rlhf::cli::RunGenerate();
  if (command == "score") return rlhf::cli::RunScore();
  std::fprintf(stderr, "rlhf: unknown command '%s'\n%s", command.c_str(), rlhf::cli::kUsage);
  return 2;
}
