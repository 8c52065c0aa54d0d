// Scoring through the reward-scoring service over gRPC on loopback, beside the same reward forward in-process, at
// several concurrencies with dynamic batching on and off, and a check of the DESIGN.md target: at concurrency 32
// the service serves at least 80% of the in-process batched rate. A benchmark, not a test (about a minute per
// shape with the defaults).
//   rlhf-bench-reward-service [--shapes=tiny,medium] [--concurrency=1,8,32] [--batch_rows=32] [--seconds=3]
// Shapes (DESIGN.md): tiny = 2 layers x 128 wide on 17 tokens (vocab 64), medium = 6 x 512 on 64 tokens (vocab
// 50257); small = GPT-2 small (12 x 768) on 128 tokens, opt-in (--shapes=tiny,medium,small).
#include <ATen/ops/ones_like.h>
#include <ATen/ops/randint.h>
#include <c10/core/InferenceMode.h>
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/model/causal_lm.h"
#include "common/model/threads.h"
#include "common/runtime/client.h"
#include "common/runtime/logging.h"
#include "common/runtime/server.h"
#include "common/runtime/server_main.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "services/reward_scoring/reward_engine.h"
#include "services/reward_scoring/reward_scoring_service_impl.h"

ABSL_FLAG(std::string, shapes, "tiny,medium",
          "comma-separated shapes: tiny (2 x 128, 17 tokens), medium (6 x 512, 64 tokens), small (GPT-2 small, "
          "12 x 768, 128 tokens), qwen2-medium (a Qwen2ForSequenceClassification, 6 x 512, 8 heads, 2 key/value "
          "heads, 64 tokens)");
ABSL_FLAG(std::string, concurrency, "1,8,32", "concurrent callers, each with one 1-pair request in flight");
ABSL_FLAG(int, batch_rows, 32, "--max_batch_rows of the server with batching on (off is 1), and the in-process batch");
ABSL_FLAG(absl::Duration, max_batch_wait, absl::Milliseconds(5), "the server's --max_batch_wait (batching on)");
ABSL_FLAG(double, seconds, 3, "timed seconds per row of the table, after a warm-up");
ABSL_FLAG(int, threads, 2, "intra-op threads");
ABSL_FLAG(std::string, work_dir, "/tmp/rlhf-bench-reward", "where the random models are written");

namespace rlhf::bench {
namespace {

struct Shape {
  std::string name;
  int64_t layers, width, heads, vocab, tokens;
  std::string model_type = "gpt2";
  int64_t kv_heads = 0;  // 0: heads
};

std::vector<int> ParseList(const std::string& text) {
  std::vector<int> values;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int value = 0;
    if (absl::SimpleAtoi(part, &value) && value > 0) values.push_back(value);
  }
  return values;
}

std::string LoadAverage() {
  std::string text;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    char buffer[128] = {0};
    if (std::fgets(buffer, sizeof(buffer), f) != nullptr) text = buffer;
    std::fclose(f);
  }
  const size_t end = text.find(' ', text.find(' ', text.find(' ') + 1) + 1);
  return end == std::string::npos ? text : text.substr(0, end);
}

// A random reward model of `shape` (no tokenizer: requests carry token ids).
absl::Status WriteModel(const std::string& dir, const Shape& shape) {
  RETURN_IF_ERROR(util::MakeDirectories(dir));
  ASSIGN_OR_RETURN(model::ModelConfig config, model::ModelConfig::ForModelType(shape.model_type));
  config.SetShape(shape.layers, shape.width, shape.heads, shape.kv_heads);
  config.vocab_size = shape.vocab;
  config.max_position_embeddings = std::max<int64_t>(shape.tokens, 128);
  config.architectures = {config.SequenceClassifierArchitecture()};
  model::ModelOptions options;
  options.reward_head = true;
  options.init_seed = 1;
  ASSIGN_OR_RETURN(auto model, model::CreateModel(config, options));
  return model->Save(dir);
}

// In-process: CausalLm::Forward with the reward head on `batch` rows of `shape.tokens` tokens, sequences/s over
// about `seconds` after a warm-up.
absl::StatusOr<double> InProcessRate(const model::CausalLm& model, const Shape& shape, int64_t batch, double seconds) {
  c10::InferenceMode inference;
  at::Tensor ids = at::randint(shape.vocab, {batch, shape.tokens}, at::kLong);
  at::Tensor mask = at::ones_like(ids);
  model::ForwardOptions options;
  options.logits = false;
  options.rewards = true;
  for (int i = 0; i < 2; ++i) RETURN_IF_ERROR(model.Forward(ids, mask, options).status());
  int64_t rows = 0;
  const auto start = std::chrono::steady_clock::now();
  double elapsed = 0;
  while (elapsed < seconds) {
    RETURN_IF_ERROR(model.Forward(ids, mask, options).status());
    rows += batch;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return static_cast<double>(rows) / elapsed;
}

struct ServiceRun {
  double rate = 0;  // sequences/s
  double p50_ms = 0, p99_ms = 0;
  int64_t failures = 0;
};

// `concurrency` callers on one channel, each sending 1-pair Score requests back to back for `seconds` after a
// warm-up.
ServiceRun RunCallers(v1::RewardScoringService::Stub& stub, const Shape& shape, int concurrency, double seconds) {
  std::atomic<bool> timing{false}, stop{false};
  std::atomic<int64_t> failures{0};
  std::mutex mu;
  std::vector<double> latencies_ms;
  std::vector<std::thread> callers;
  for (int c = 0; c < concurrency; ++c) {
    callers.emplace_back([&, c] {
      std::mt19937 rng(static_cast<uint32_t>(c + 1));
      std::vector<double> mine;
      while (!stop.load()) {
        v1::ScoreRequest request;
        v1::ScoreItem* item = request.add_items();
        const int64_t prompt = shape.tokens / 2;
        for (int64_t t = 0; t < shape.tokens; ++t) {
          auto* ids =
              t < prompt ? item->mutable_prompt()->mutable_token_ids() : item->mutable_response()->mutable_token_ids();
          ids->add_ids(static_cast<int32_t>(rng() % static_cast<uint32_t>(shape.vocab)));
        }
        v1::ScoreResponse response;
        auto context = runtime::ContextWithTimeout(absl::Minutes(5));
        const auto start = std::chrono::steady_clock::now();
        const grpc::Status status = stub.Score(context.get(), request, &response);
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        if (!status.ok()) {
          ++failures;
          continue;
        }
        // Throughput counts the responses that arrive inside the timed window, whenever they were sent: counting
        // only those sent and answered inside it would undercount by about latency / window.
        if (timing.load()) mine.push_back(ms);
      }
      std::lock_guard<std::mutex> lock(mu);
      latencies_ms.insert(latencies_ms.end(), mine.begin(), mine.end());
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(std::min(1.0, seconds / 3)));  // warm-up
  const auto start = std::chrono::steady_clock::now();
  timing = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  timing = false;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stop = true;
  for (auto& t : callers) t.join();
  ServiceRun run;
  run.failures = failures.load();
  if (latencies_ms.empty()) return run;
  std::sort(latencies_ms.begin(), latencies_ms.end());
  auto percentile = [&](double p) {
    const size_t i =
        std::min(latencies_ms.size() - 1, static_cast<size_t>(p * static_cast<double>(latencies_ms.size())));
    return latencies_ms[i];
  };
  // Requests that started and finished inside the timed window (each carries one sequence).
  run.rate = static_cast<double>(latencies_ms.size()) / elapsed;
  run.p50_ms = percentile(0.50);
  run.p99_ms = percentile(0.99);
  return run;
}

int Run() {
  if (absl::Status status = model::SetIntraOpThreads(absl::GetFlag(FLAGS_threads)); !status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const int batch_rows = absl::GetFlag(FLAGS_batch_rows);
  const std::vector<int> concurrencies = ParseList(absl::GetFlag(FLAGS_concurrency));
  const std::vector<Shape> known = {
      {"tiny", 2, 128, 4, 64, 17},
      {"medium", 6, 512, 8, 50257, 64},
      {"small", 12, 768, 12, 50257, 128},
      // Other teams' reward models: the Qwen2 family (q/k/v biases, GQA) at the medium shape.
      {"qwen2-medium", 6, 512, 8, 50257, 64, "qwen2", 2}};
  std::printf(
      "reward scoring: service over gRPC on loopback vs in-process forward; %d intra-op threads; "
      "load average before: %s\n",
      absl::GetFlag(FLAGS_threads), LoadAverage().c_str());
  std::printf("%-7s %-26s %11s %9s %9s %9s\n", "shape", "path", "seq/s", "p50 ms", "p99 ms", "/in-proc");
  bool all_met = true;
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_shapes), ',', absl::SkipEmpty())) {
    auto shape_it = std::find_if(known.begin(), known.end(), [&](const Shape& s) { return s.name == name; });
    if (shape_it == known.end()) {
      std::fprintf(stderr, "--shapes: unknown shape '%s' (tiny, medium, small)\n", std::string(name).c_str());
      return 2;
    }
    const Shape& shape = *shape_it;
    const std::string dir = absl::StrCat(absl::GetFlag(FLAGS_work_dir), "/", shape.name);
    if (absl::Status status = WriteModel(dir, shape); !status.ok()) {
      std::fprintf(stderr, "%s\n", status.ToString().c_str());
      return 1;
    }
    auto model = model::LoadModel(dir);
    if (!model.ok()) {
      std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
      return 1;
    }
    auto single = InProcessRate(**model, shape, 1, seconds);
    auto batched = InProcessRate(**model, shape, batch_rows, seconds);
    if (!single.ok() || !batched.ok()) {
      std::fprintf(stderr, "%s\n", (single.ok() ? batched.status() : single.status()).ToString().c_str());
      return 1;
    }
    model->reset();
    const std::string label = absl::StrCat(shape.name);
    std::printf("%-7s %-26s %11.1f %9s %9s %9s\n", label.c_str(), "in-process batch 1", *single, "", "", "");
    std::printf("%-7s %-26s %11.1f %9s %9s %9s\n", label.c_str(), absl::StrCat("in-process batch ", batch_rows).c_str(),
                *batched, "", "", "");
    std::fflush(stdout);
    double target_ratio = -1;
    for (const bool batching : {true, false}) {
      reward::RewardEngineOptions options;
      options.model.model_dir = dir;
      options.queue.max_batch_rows = batching ? static_cast<size_t>(batch_rows) : 1;
      options.queue.max_wait = absl::GetFlag(FLAGS_max_batch_wait);
      options.queue.max_queued = 1024;
      auto engine = reward::RewardEngine::Create(options);
      if (!engine.ok()) {
        std::fprintf(stderr, "%s\n", engine.status().ToString().c_str());
        return 1;
      }
      auto registry = std::make_shared<prometheus::Registry>();
      reward::RewardMetrics metrics(*registry);
      reward::RewardScoringServiceImpl service(engine->get(), &metrics);
      runtime::ServerOptions server_options;
      server_options.name = "bench";
      server_options.listen_address = "127.0.0.1:0";
      server_options.metrics_address.clear();
      auto server = runtime::Server::Start(server_options, {{"rlhf.v1.RewardScoringService", &service}}, registry);
      if (!server.ok()) {
        std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
        return 1;
      }
      runtime::ClientOptions client;
      client.target = absl::StrCat("127.0.0.1:", (*server)->port());
      auto channel = runtime::MakeChannel(client);
      auto stub = v1::RewardScoringService::NewStub(*channel);
      for (const int concurrency : concurrencies) {
        const ServiceRun run = RunCallers(*stub, shape, concurrency, seconds);
        const double ratio = run.rate / *batched;
        if (batching && concurrency == 32) target_ratio = ratio;
        const std::string path = absl::StrCat("service ", batching ? "batched" : "unbatched", " c=", concurrency,
                                              run.failures > 0 ? absl::StrCat(" (", run.failures, " failed)") : "");
        std::printf("%-7s %-26s %11.1f %9.2f %9.2f %8.2fx\n", label.c_str(), path.c_str(), run.rate, run.p50_ms,
                    run.p99_ms, ratio);
        std::fflush(stdout);
      }
      (*server)->Shutdown();
      (*engine)->Shutdown();
    }
    if (target_ratio >= 0) {
      const bool met = target_ratio >= 0.8;
      all_met = all_met && met;
      std::printf("%-7s target (concurrency 32, batched >= 0.80x in-process batch %d): %.2fx, %s\n", label.c_str(),
                  batch_rows, target_ratio, met ? "met" : "NOT met");
    }
  }
  std::printf("load average after: %s\n", LoadAverage().c_str());
  std::printf("DESIGN.md reward-service target: %s\n", all_met ? "met" : "NOT met");
  return 0;
}

}  // namespace
}  // namespace rlhf::bench

int main(int argc, char** argv) {
  // The allocator settings of rlhf-reward-scoring (see its main.cc), for the in-process and the service paths alike.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  rlhf::runtime::SetUpFlagUsage("rlhf-bench-reward-service: reward scoring through gRPC vs in-process");
  absl::ParseCommandLine(argc, argv);
  rlhf::runtime::LoggingOptions logging;
  logging.level = "warn";  // keep the table readable: no per-request lines
  if (!rlhf::runtime::InitLogging(logging).ok()) return 1;
  return rlhf::bench::Run();
}
