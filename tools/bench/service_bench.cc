// Generation through the policy-generation service over gRPC on loopback, beside the same sampling in-process, so
// the cost of the RPC layer and the gain of batching concurrent callers are visible. A benchmark, not a test.
//   rlhf-bench-generation-service [--models=small,tiny] [--concurrency=1,8] [--new_tokens=64] [--requests=3]
#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/model/causal_lm.h"
#include "common/model/sampler.h"
#include "common/model/threads.h"
#include "common/runtime/client.h"
#include "common/runtime/logging.h"
#include "common/runtime/server.h"
#include "common/runtime/server_main.h"
#include "common/serving/engine_metrics.h"
#include "common/tokenizer/byte_tokenizer.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "services/policy_generation/generation_engine.h"
#include "services/policy_generation/policy_generation_service_impl.h"

ABSL_FLAG(std::string, models, "small,tiny",
          "shapes: small (GPT-2 12 x 768, vocab 50257), tiny (GPT-2 2 x 128, vocab 258), llama-tiny (Llama 2 x 128, "
          "GQA 4/2, vocab 258), smollm2 (Llama 30 x 576, GQA 9/3, vocab 49152)");
ABSL_FLAG(std::string, concurrency, "1,8", "concurrent callers (service) and batch sizes (in-process)");
ABSL_FLAG(int, prompt, 32, "prompt tokens per request");
ABSL_FLAG(int, new_tokens, 64, "sampled tokens per request (EOS ignored: every request runs to the end)");
ABSL_FLAG(int, requests, 3, "requests per caller (service) / batches (in-process), after one warm-up");
ABSL_FLAG(int, threads, 2, "intra-op threads");
ABSL_FLAG(std::string, work_dir, "/tmp/rlhf-bench-service", "where the random model is written");

namespace rlhf::bench {
namespace {

std::vector<int> ParseList(const std::string& text) {
  std::vector<int> values;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int value = 0;
    if (absl::SimpleAtoi(part, &value) && value > 0) values.push_back(value);
  }
  return values;
}

// The random model of a --models name: small (GPT-2 small), tiny (GPT-2 2 x 128, byte tokenizer), llama-tiny (the
// same shape as a Llama: 4 heads, 2 key/value heads) or smollm2 (SmolLM2-135M's shape: 30 x 576, 9 heads, 3
// key/value heads, intermediate 1536, vocab 49152).
absl::Status WriteModel(const std::string& dir, absl::string_view name) {
  RETURN_IF_ERROR(util::MakeDirectories(dir));
  model::ModelConfig config;
  if (name == "smollm2") {
    ASSIGN_OR_RETURN(config, model::ModelConfig::ForModelType("llama"));
    config.SetShape(30, 576, 9, 3, 64, 1536);
    config.vocab_size = 49152;
    config.max_position_embeddings = 2048;
  } else if (name == "tiny" || name == "llama-tiny") {
    if (name == "llama-tiny") {
      ASSIGN_OR_RETURN(config, model::ModelConfig::ForModelType("llama"));
      config.SetShape(2, 128, 4, 2);
    } else {
      config.SetShape(2, 128, 4);
    }
    config.max_position_embeddings = 256;
    ASSIGN_OR_RETURN(auto tokenizer, tokenizer::ByteTokenizer::Create());
    RETURN_IF_ERROR(tokenizer->Save(dir + "/tokenizer.json"));
    config.vocab_size = tokenizer->VocabSize();
  } else if (name != "small") {
    return absl::InvalidArgumentError(
        absl::StrCat("--models: '", name, "' is not small, tiny, llama-tiny or smollm2"));
  }
  ASSIGN_OR_RETURN(auto model, model::CreateModel(config));
  return model->Save(dir);
}

std::vector<int32_t> RandomPrompt(absl::BitGen& gen, int length, int64_t vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(length));
  for (auto& id : ids) id = absl::Uniform<int32_t>(gen, 0, static_cast<int32_t>(vocab));
  return ids;
}

int Run() {
  const int new_tokens = absl::GetFlag(FLAGS_new_tokens);
  const int requests = absl::GetFlag(FLAGS_requests);
  if (absl::Status status = model::SetIntraOpThreads(absl::GetFlag(FLAGS_threads)); !status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  std::printf("%-6s %-28s %12s %10s\n", "model", "path", "tokens/s", "vs in-proc");
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_models), ',', absl::SkipEmpty())) {
    const std::string dir = absl::StrCat(absl::GetFlag(FLAGS_work_dir), "/", name);
    if (absl::Status status = WriteModel(dir, name); !status.ok()) {
      std::fprintf(stderr, "%s\n", status.ToString().c_str());
      return 1;
    }
    generation::GenerationEngineOptions options;
    options.model.model_dir = dir;
    options.queue.max_batch_rows = 64;
    options.max_new_tokens = new_tokens;
    auto engine = generation::GenerationEngine::Create(options);
    if (!engine.ok()) {
      std::fprintf(stderr, "%s\n", engine.status().ToString().c_str());
      return 1;
    }
    const int64_t vocab = (*engine)->store().config().vocab_size;
    auto registry = std::make_shared<prometheus::Registry>();
    serving::EngineMetrics metrics(*registry, "generation", "policy-generation");
    generation::PolicyGenerationServiceImpl service(engine->get(), &metrics, int64_t{1} << 32);
    runtime::ServerOptions server_options;
    server_options.name = "bench";
    server_options.listen_address = "127.0.0.1:0";
    server_options.metrics_address.clear();
    auto server = runtime::Server::Start(server_options, {{"rlhf.v1.PolicyGenerationService", &service}}, registry);
    if (!server.ok()) {
      std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
      return 1;
    }
    for (const int concurrency : ParseList(absl::GetFlag(FLAGS_concurrency))) {
      // In-process: the sampler on a batch of `concurrency` prompts.
      absl::BitGen gen;
      double in_process = 0;
      {
        auto sampler = model::Sampler::Create((*engine)->store().Current()->model.get());
        model::SamplingOptions sampling;
        sampling.max_new_tokens = new_tokens;
        std::vector<std::vector<int64_t>> prompts;
        for (int i = 0; i < concurrency; ++i) {
          auto ids = RandomPrompt(gen, absl::GetFlag(FLAGS_prompt), vocab);
          prompts.emplace_back(ids.begin(), ids.end());
        }
        (void)(*sampler)->Generate(prompts, sampling);  // warm-up
        const auto start = std::chrono::steady_clock::now();
        for (int r = 0; r < requests; ++r) (void)(*sampler)->Generate(prompts, sampling);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        in_process = static_cast<double>(requests) * concurrency * new_tokens / seconds;
      }
      // Through gRPC: `concurrency` callers, one prompt per request, batched by the engine.
      runtime::ClientOptions client;
      client.target = absl::StrCat("127.0.0.1:", (*server)->port());
      auto channel = *runtime::MakeChannel(client);
      auto stub = v1::PolicyGenerationService::NewStub(channel);
      auto call = [&](uint64_t seed) {
        v1::GenerateRequest request;
        absl::BitGen local(std::seed_seq{seed});
        auto ids = RandomPrompt(local, absl::GetFlag(FLAGS_prompt), vocab);
        request.add_prompts()->mutable_token_ids()->mutable_ids()->Add(ids.begin(), ids.end());
        request.mutable_sampling()->set_max_new_tokens(new_tokens);
        request.mutable_sampling()->set_ignore_eos(true);
        request.mutable_sampling()->set_seed(seed);
        v1::GenerateResponse response;
        auto context = runtime::ContextWithTimeout(absl::Minutes(10));
        const grpc::Status status = stub->Generate(context.get(), request, &response);
        return status.ok() ? response.stats().generated_tokens() : int64_t{0};
      };
      std::vector<std::thread> warm;
      for (int c = 0; c < concurrency; ++c) warm.emplace_back([&, c] { call(static_cast<uint64_t>(c)); });
      for (auto& t : warm) t.join();
      std::atomic<int64_t> tokens{0};
      const auto start = std::chrono::steady_clock::now();
      std::vector<std::thread> callers;
      for (int c = 0; c < concurrency; ++c) {
        callers.emplace_back([&, c] {
          for (int r = 0; r < requests; ++r) tokens += call(static_cast<uint64_t>(1000 * c + r));
        });
      }
      for (auto& t : callers) t.join();
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double through_service = static_cast<double>(tokens.load()) / seconds;
      std::printf("%-6s in-process batch %-11d %12.1f %10s\n", std::string(name).c_str(), concurrency, in_process, "");
      std::printf("%-6s service concurrency %-8d %12.1f %9.2fx\n", std::string(name).c_str(), concurrency,
                  through_service, through_service / in_process);
      std::fflush(stdout);
    }
    (*server)->Shutdown();
    (*engine)->Shutdown();
  }
  return 0;
}

}  // namespace
}  // namespace rlhf::bench

int main(int argc, char** argv) {
  rlhf::runtime::SetUpFlagUsage("rlhf-bench-generation-service: generation through gRPC vs in-process");
  absl::ParseCommandLine(argc, argv);
  rlhf::runtime::LoggingOptions logging;
  logging.level = "warn";  // keep the table readable: no per-request lines
  if (!rlhf::runtime::InitLogging(logging).ok()) return 1;
  return rlhf::bench::Run();
}
