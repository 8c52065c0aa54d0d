// Where a PPO step's time goes: the trainer's step (PpoLearner::Step) split into forward passes (rollout statistics
// and minibatch forwards), backward passes and the optimiser, plus the weight export that follows every step
// (serialising the policy for UpdateWeights), for the built-in task's tiny model and a GPT-2-small-shaped one.
// A benchmark, not a test. DESIGN.md sets no target and names no peer for the PPO step (its targets are generation
// and scoring); the table says so.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_split.h"
#include "common/model/causal_lm.h"
#include "common/model/safetensors.h"
#include "common/model/threads.h"
#include "common/training/ppo_learner.h"

ABSL_FLAG(std::string, models, "tiny,small", "comma-separated shapes: tiny (2x128, vocab 65), small (GPT-2 small)");
ABSL_FLAG(int, rollouts, 64, "rollouts per step (tiny); GPT-2 small uses --small_rollouts");
ABSL_FLAG(int, small_rollouts, 8, "rollouts per step for GPT-2 small");
ABSL_FLAG(int, prompt, 8, "prompt tokens per rollout (tiny); GPT-2 small uses 32");
ABSL_FLAG(int, response, 9, "response tokens per rollout (tiny); GPT-2 small uses 32");
ABSL_FLAG(int, epochs, 4, "PPO epochs per step (tiny); GPT-2 small uses 1");
ABSL_FLAG(int, steps, 3, "timed steps per shape (after one warm-up step); the median is reported");
ABSL_FLAG(int, threads, 2, "intra-op threads");

namespace rlhf::bench {
namespace {

struct Shape {
  std::string name;
  int layers, width, heads, vocab, rollouts, prompt, response, epochs, minibatch;
};

struct Timing {
  double total = 0, forward = 0, backward = 0, optimizer = 0, export_seconds = 0;
};

std::vector<training::Rollout> MakeRollouts(const Shape& s, std::mt19937_64& rng) {
  std::vector<training::Rollout> out;
  for (int i = 0; i < s.rollouts; ++i) {
    training::Rollout r;
    for (int t = 0; t < s.prompt; ++t) r.prompt.push_back(static_cast<int64_t>(rng() % s.vocab));
    for (int t = 0; t < s.response; ++t) r.response.push_back(static_cast<int64_t>(rng() % s.vocab));
    r.reference_logprobs.assign(s.response, -4.0f);  // sampling log-probs are recomputed by the learner
    r.score = static_cast<double>(rng() % 100) / 50.0 - 1.0;
    out.push_back(std::move(r));
  }
  return out;
}

int Run() {
  if (absl::Status s = model::SetIntraOpThreads(absl::GetFlag(FLAGS_threads)); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  std::vector<Shape> shapes;
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_models), ',')) {
    if (name == "tiny") {
      shapes.push_back({"tiny 2x128", 2, 128, 4, 65, absl::GetFlag(FLAGS_rollouts), absl::GetFlag(FLAGS_prompt),
                        absl::GetFlag(FLAGS_response), absl::GetFlag(FLAGS_epochs), 32});
    } else if (name == "small") {
      shapes.push_back({"GPT-2 small 12x768", 12, 768, 12, 50257, absl::GetFlag(FLAGS_small_rollouts), 32, 32, 1, 8});
    } else {
      std::fprintf(stderr, "unknown model shape '%s'\n", std::string(name).c_str());
      return 2;
    }
  }
  std::printf("PPO step time (median of %d steps, %d threads). Forward = rollout statistics + minibatch forwards of\n"
              "policy and value model; export = serialising the policy for UpdateWeights.\n\n",
              absl::GetFlag(FLAGS_steps), absl::GetFlag(FLAGS_threads));
  std::printf("%-20s %8s %8s %8s %9s %9s %9s %9s %9s %10s\n", "model", "rollouts", "tokens", "epochs", "step s",
              "forward", "backward", "optim", "export", "tokens/s");
  for (const Shape& s : shapes) {
    model::ModelConfig config;
    config.SetShape(s.layers, s.width, s.heads);
    config.max_position_embeddings = std::max(64, s.prompt + s.response);
    config.vocab_size = s.vocab;
    model::ModelOptions po;
    auto policy = model::CreateModel(config, po);
    model::ModelOptions vo;
    vo.value_head = true;
    vo.init_seed = 1;
    auto value = model::CreateModel(config, vo);
    if (!policy.ok() || !value.ok()) {
      std::fprintf(stderr, "cannot create the models\n");
      return 1;
    }
    auto learner = training::PpoLearner::Create(std::shared_ptr<model::CausalLm>(std::move(*policy)),
                                                std::shared_ptr<model::CausalLm>(std::move(*value)));
    if (!learner.ok()) {
      std::fprintf(stderr, "%s\n", learner.status().ToString().c_str());
      return 1;
    }
    training::PpoOptions options;
    options.ppo_epochs = s.epochs;
    options.minibatch_size = s.minibatch;
    options.policy_optimizer.learning_rate = 1e-5;
    options.value_optimizer.learning_rate = 1e-5;
    std::mt19937_64 rng(7);
    std::vector<Timing> timings;
    for (int step = 0; step <= absl::GetFlag(FLAGS_steps); ++step) {
      const auto rollouts = MakeRollouts(s, rng);
      auto stats = (*learner)->Step(rollouts, options);
      if (!stats.ok()) {
        std::fprintf(stderr, "%s\n", stats.status().ToString().c_str());
        return 1;
      }
      const auto t0 = std::chrono::steady_clock::now();
      auto bytes = model::SerializeSafetensors((*learner)->policy().StateDict(), {{"format", "pt"}});
      const double export_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!bytes.ok()) return 1;
      if (step == 0) continue;  // warm-up
      timings.push_back({stats->elapsed_seconds, stats->forward_seconds, stats->backward_seconds,
                         stats->optimizer_seconds, export_seconds});
    }
    std::sort(timings.begin(), timings.end(), [](const Timing& a, const Timing& b) { return a.total < b.total; });
    const Timing& m = timings[timings.size() / 2];
    const double tokens = static_cast<double>(s.rollouts) * s.response;
    std::printf("%-20s %8d %8.0f %8d %9.3f %9.3f %9.3f %9.3f %9.3f %10.0f\n", s.name.c_str(), s.rollouts, tokens,
                s.epochs, m.total, m.forward, m.backward, m.optimizer, m.export_seconds,
                tokens * s.epochs / m.total);
  }
  std::printf("\nTargets: DESIGN.md sets none for the PPO step and names no peer for it (its targets are generation\n"
              "and scoring throughput), so there is no ratio to report.\n");
  return 0;
}

}  // namespace
}  // namespace rlhf::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("PPO step time split into forward, backward, optimiser and weight export.");
  absl::ParseCommandLine(argc, argv);
  return rlhf::bench::Run();
}
