// rlhf: the suite's command-line tool (`rlhf --help` lists the commands and flags).
#include <unistd.h>

#include <cmath>
#include <cstdio>
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
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "rlhf/v1/generation.grpc.pb.h"
#include "rlhf/v1/reference.grpc.pb.h"
#include "tools/cli/local_services.h"
#include "tools/cli/model_commands.h"

ABSL_FLAG(std::string, bin_dir, "",
          "run: build folder holding services/<name>/rlhf-<name>; empty means the build this rlhf binary is in");
ABSL_FLAG(std::string, run_dir, "runs/local", "run: folder for the run's files and the services' logs");
ABSL_FLAG(absl::Duration, startup_timeout, absl::Seconds(60), "run: how long services may take to report SERVING");
ABSL_FLAG(std::string, target, "127.0.0.1:50051", "health: host:port of the server to probe");
ABSL_FLAG(std::string, service, "", "health: service name to ask about; empty asks about the whole server");
ABSL_FLAG(std::string, tls_ca_file, "", "health: PEM CA bundle; set to probe a TLS server");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(3), "health: deadline of the probe");

namespace rlhf::cli {
namespace {

constexpr char kUsage[] =
    "rlhf: command-line tool of the RLHF suite.\n\n"
    "Usage:\n"
    "  rlhf run [--run_dir=DIR]            start the six services on loopback, check their health, run the job\n"
    "  rlhf health --target=HOST:PORT [--service=NAME]\n"
    "                                      exit 0 when the server (or service) reports SERVING, 1 otherwise\n"
    "  rlhf init-model --out=DIR [--n_layer --n_embd --n_head --n_positions --tokenizer=byte|gpt2 --seed]\n"
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
  if (!health.ok()) {
    std::printf("%s: unreachable (%s)\n", what.c_str(), health.status().ToString().c_str());
    return 1;
  }
  switch (*health) {
    case runtime::HealthState::kServing:
      std::printf("%s: SERVING\n", what.c_str());
      return 0;
    case runtime::HealthState::kNotServing:
      std::printf("%s: NOT_SERVING\n", what.c_str());
      return 1;
    case runtime::HealthState::kUnknownService:
      std::printf("%s: unknown service\n", what.c_str());
      return 1;
  }
  return 1;
}

// Samples from the policy-generation service and checks that the reference service, serving the same weights,
// assigns the sampled tokens the log-probs the sampler reported.
absl::Status SampleAndScore(const std::vector<LocalService>& services) {
  runtime::ClientOptions client;
  client.target = absl::StrCat("127.0.0.1:", services[0].port);
  ASSIGN_OR_RETURN(auto generation_channel, runtime::MakeChannel(client));
  client.target = absl::StrCat("127.0.0.1:", services[1].port);
  ASSIGN_OR_RETURN(auto reference_channel, runtime::MakeChannel(client));
  auto generation = v1::PolicyGenerationService::NewStub(generation_channel);
  auto reference = v1::ReferenceLogprobService::NewStub(reference_channel);
  v1::GenerateRequest request;
  request.add_prompts()->set_text("reverse: red green blue =>");
  request.set_num_samples(2);
  request.mutable_sampling()->set_max_new_tokens(24);
  request.mutable_sampling()->set_seed(1);
  v1::GenerateResponse generated;
  auto context = runtime::ContextWithTimeout(absl::Seconds(60));
  RETURN_IF_ERROR(runtime::FromGrpcStatus(generation->Generate(context.get(), request, &generated)));
  v1::LogProbsRequest scoring;
  for (const auto& completion : generated.results(0).completions()) {
    v1::PromptResponseIds* seq = scoring.add_sequences();
    *seq->mutable_prompt_token_ids() = generated.results(0).prompt_token_ids();
    *seq->mutable_response_token_ids() = completion.token_ids();
  }
  v1::LogProbsResponse scored;
  context = runtime::ContextWithTimeout(absl::Seconds(60));
  RETURN_IF_ERROR(runtime::FromGrpcStatus(reference->LogProbs(context.get(), scoring, &scored)));
  std::printf("\nSampled through policy-generation (model %s v%lld), scored through reference-logprob:\n",
              generated.model_id().name().c_str(), static_cast<long long>(generated.model_id().version()));
  double worst = 0;
  for (int i = 0; i < generated.results(0).completions_size(); ++i) {
    const auto& completion = generated.results(0).completions(i);
    for (int t = 0; t < completion.logprobs_size(); ++t) {
      worst = std::max(worst, static_cast<double>(std::abs(completion.logprobs(t) - scored.results(i).logprobs(t))));
    }
    std::printf("  sample %d: %d tokens, log-likelihood %.3f (reference %.3f)\n", i, completion.token_ids_size(),
                absl::c_accumulate(completion.logprobs(), 0.0), scored.results(i).sum_logprob());
  }
  std::printf("  largest per-token log-prob difference between the two services: %.2e\n", worst);
  if (worst > 1e-4) return absl::InternalError("the services disagree on log-probs of the same weights");
  return absl::OkStatus();
}

int RunMainJob() {
  std::string bin_dir = absl::GetFlag(FLAGS_bin_dir);
  if (bin_dir.empty()) bin_dir = DefaultBinDir();
  const std::string run_dir = absl::GetFlag(FLAGS_run_dir);
  const std::string log_dir = absl::StrCat(run_dir, "/logs");
  if (absl::Status status = util::MakeDirectories(log_dir); !status.ok()) {
    std::fprintf(stderr, "rlhf run: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  // Until the pipeline trains one, the services serve a small randomly initialised policy made here.
  const std::string model_dir = absl::StrCat(run_dir, "/models/init");
  if (::access((model_dir + "/model.safetensors").c_str(), R_OK) != 0) {
    InitModelOptions init;
    init.out_dir = model_dir;
    if (absl::Status status = InitModel(init); !status.ok()) {
      std::fprintf(stderr, "rlhf run: %s\n", status.ToString().c_str());
      return 1;
    }
    std::printf("Wrote an initial policy (random 2x128 GPT-2, byte tokenizer) to %s\n", model_dir.c_str());
  }
  std::vector<LocalService> services = SuiteServices(bin_dir, model_dir);
  std::printf("Starting %zu services on loopback (logs in %s)...\n", services.size(), log_dir.c_str());
  if (absl::Status status = StartLocalServices(services, log_dir, absl::GetFlag(FLAGS_startup_timeout)); !status.ok()) {
    std::fprintf(stderr, "rlhf run: %s\n", status.ToString().c_str());
    return 1;
  }
  std::printf("\n%-20s %-34s %-17s %-17s %s\n", "service", "grpc service", "address", "metrics", "health");
  for (const auto& service : services) {
    std::printf("%-20s %-34s 127.0.0.1:%-7d 127.0.0.1:%-7d SERVING\n", service.name.c_str(),
                service.grpc_service.c_str(), service.port, service.metrics_port);
  }
  const absl::Status round_trip = SampleAndScore(services);
  if (!round_trip.ok()) std::fprintf(stderr, "rlhf run: %s\n", round_trip.ToString().c_str());
  std::printf(
      "\nThe training pipeline (SFT -> reward model -> PPO) is not built yet: the trainer, reward, labeling and\n"
      "orchestrator RPCs answer UNIMPLEMENTED, so no training runs. Stopping the services.\n");
  if (absl::Status status = StopLocalServices(services, absl::Seconds(40)); !status.ok()) {
    std::fprintf(stderr, "rlhf run: %s\n", status.ToString().c_str());
    return 1;
  }
  std::printf("All services drained and exited cleanly.\n");
  return round_trip.ok() ? 0 : 1;
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
  if (args.size() > 2) {
    std::fprintf(stderr, "rlhf %s: unexpected argument '%s'\n", command.c_str(), args[2]);
    return 2;
  }
  if (command == "health") return rlhf::cli::RunHealth();
  if (command == "run") return rlhf::cli::RunMainJob();
  if (command == "init-model") return rlhf::cli::RunInitModel();
  if (command == "info") return rlhf::cli::RunInfo();
  if (command == "tokenize") return rlhf::cli::RunTokenize();
  if (command == "generate") return rlhf::cli::RunGenerate();
  if (command == "score") return rlhf::cli::RunScore();
  std::fprintf(stderr, "rlhf: unknown command '%s'\n%s", command.c_str(), rlhf::cli::kUsage);
  return 2;
}
